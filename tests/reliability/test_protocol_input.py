"""Malformed protocol input from the go side: each bad request gets an ``Err`` answer when its ID
can be read (else one line on stderr), the helper keeps serving, and L1 never holds a file whose
contents do not match its name."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from tests.helper.driver import Helper, action
from tests.reliability.support import check_l1

B64 = base64.b64encode
BODY = b"a compiled object\n" * 40


def put_line(request_id: int, **fields: object) -> bytes:
    request = {"ID": request_id, "Command": "put", "ActionID": B64(action(request_id)).decode(),
               "OutputID": B64(hashlib.sha256(BODY).digest()).decode(), "BodySize": len(BODY), **fields}
    return json.dumps(request).encode() + b"\n\n"


GOOD_BODY = b'"' + B64(BODY) + b'"\n'

#: (what, bytes sent, the request ID that must get an Err, or None when none can be read)
CASES = [
    ("not JSON", b"{this is not json\n\n", None),
    ("not an object", b"[1, 2, 3]\n\n", None),
    ("no ID", b'{"Command": "get"}\n\n', None),
    ("unknown command", b'{"ID": 101, "Command": "frobnicate"}\n\n', 101),
    ("no command", b'{"ID": 102}\n\n', 102),
    ("ActionID not base64", b'{"ID": 103, "Command": "get", "ActionID": "!!notbase64!!"}\n\n', 103),
    ("ActionID too short", b'{"ID": 104, "Command": "get", "ActionID": "AAAA"}\n\n', 104),
    ("ActionID not a string", b'{"ID": 105, "Command": "get", "ActionID": 12345}\n\n', 105),
    ("ActionID not ASCII", b'{"ID": 114, "Command": "get", "ActionID": "\\u00e9AAA"}\n\n', 114),
    ("get without ActionID", b'{"ID": 106, "Command": "get"}\n\n', 106),
    ("negative BodySize", put_line(107, BodySize=-5), 107),
    ("body not base64", put_line(108) + b'"%%% not base64 %%%"\n', 108),
    ("body not a JSON string", put_line(109) + B64(BODY) + b"\n", 109),
    ("body shorter than BodySize", put_line(110, BodySize=len(BODY) + 7) + GOOD_BODY, 110),
    ("body longer than BodySize", put_line(111, BodySize=len(BODY) - 7) + GOOD_BODY, 111),
    ("OutputID not the body's SHA-256", put_line(112, OutputID=B64(b"\x07" * 32).decode()) + GOOD_BODY, 112),
    ("put without OutputID", put_line(113, OutputID=None) + GOOD_BODY, 113),
]


@pytest.mark.parametrize(("what", "data", "request_id"), CASES, ids=[c[0] for c in CASES])
def test_malformed_request_is_answered_and_changes_nothing(tmp_path: Path, what: str, data: bytes,
                                                          request_id: int | None) -> None:
    h = Helper(tmp_path / "l1")
    h.send_raw(data)
    if request_id is not None:
        answer = h.read()
        assert answer["ID"] == request_id and answer.get("Err"), (what, answer)
        assert not answer.get("DiskPath")
    # The loop goes on: a good put and a get of it round-trip.
    h.next_id = 1000
    h.send("put", action(7), BODY)
    assert Path(h.read()["DiskPath"]).read_bytes() == BODY
    h.send("get", action(7))
    assert Path(h.read()["DiskPath"]).read_bytes() == BODY
    h.close()
    assert h.proc.returncode == 0
    stderr = h.stderr()
    if request_id is None:
        assert stderr.count("cannot be read") == 1, stderr
    assert check_l1(tmp_path / "l1") == 1  # only the good put


def test_a_burst_of_garbage_then_go_carries_on(tmp_path: Path) -> None:
    h = Helper(tmp_path / "l1")
    expected = []
    for _, data, request_id in CASES:
        h.send_raw(data)
        if request_id is not None:
            expected.append(request_id)
    answers = [h.read() for _ in expected]
    assert sorted(a["ID"] for a in answers) == sorted(expected)
    assert all(a.get("Err") for a in answers)
    h.next_id = 2000
    h.send("get", action(1))
    assert h.read()["Miss"] is True
    h.close()
    assert h.proc.returncode == 0
    assert h.stderr().count("cannot be read") == 1, "one line for all unreadable requests"
    assert check_l1(tmp_path / "l1") == 0
