"""schemathesis against a real gate, from the gate's own OpenAPI schema (served to admins at
``/v1/admin/openapi.json``), once with a valid admin token and once with none: no answer is a
5xx, and every 4xx carries a reason (``{"error": "..."}``)."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.core.result import Ok

from tests.conftest import StartGate
from tests.gatefixture import GateProcess

ADMIN_TOKEN = "schema-fuzz-admin-4d9e"
EXAMPLES = 15  # per operation and mode; about 20 operations


@pytest.fixture
def gate(gate_factory: StartGate) -> GateProcess:
    sha = hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()
    return gate_factory({"auth": {"static_tokens": [{"sha256": sha, "name": "fuzz-admin", "role": "admin"}]},
                         "limits": {"max_entry_bytes": 1 << 20}})


def declared(raw: dict[str, Any]) -> dict[str, Any]:
    """The schema with every ``{name}`` of a path declared as a path parameter: routes that read
    ``request.path_params`` themselves leave them out, and schemathesis needs them."""
    for path, operations in raw["paths"].items():
        names = re.findall(r"{(\w+)}", path)
        for operation in operations.values():
            params = operation.setdefault("parameters", [])
            have = {p["name"] for p in params if p.get("in") == "path"}
            params += [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                       for n in names if n not in have]
    return raw


def problems_of(response: Any) -> str | None:
    status = response.status_code
    if status >= 500:
        return f"{status}: {response.text[:200]}"
    if status >= 400:
        try:
            reason = response.json().get("error")
        except ValueError:
            reason = None
        if not isinstance(reason, str) or not reason:
            return f"{status} without a reason: {response.text[:200]!r}"
    return None


@pytest.mark.parametrize("token", [ADMIN_TOKEN, None], ids=["admin", "no-token"])
def test_no_5xx_and_every_4xx_has_a_reason(gate: GateProcess, token: str | None) -> None:
    raw = httpx.get(f"{gate.url}/v1/admin/openapi.json", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()
    schema = schemathesis.openapi.from_dict(declared(raw))
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    found: list[str] = []
    statuses: set[int] = set()
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operations.append(result.ok())
    assert any(op.method.upper() == "GET" and op.path == "/v1/ns/{ns}/actions/{action}" for op in operations)

    def fuzz(operation: Any) -> None:
        @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(data=st.data())
        def run(data: st.DataObject) -> None:
            case = data.draw(operation.as_strategy())
            response = case.call(base_url=gate.url, headers=headers, timeout=30)
            statuses.add(response.status_code)
            problem = problems_of(response)
            if problem is not None:
                found.append(f"{operation.method.upper()} {operation.path}: {problem}")

        run()

    for operation in operations:
        fuzz(operation)
    assert not found, "\n".join(sorted(set(found))[:20])
    if token is None:
        assert 401 in statuses
    else:
        assert {200, 400, 404} <= statuses, statuses
