"""Fixtures of the reliability tests: the reference build every fault is compared with."""

from __future__ import annotations

import pytest

from tests.gohelpers import Machine, write_module
from tests.reliability.support import Reference, digest


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """The sample module built cold by plain go (no cache program), then through the helper alone."""
    root = tmp_path_factory.mktemp("reference")
    module = write_module(root / "src" / "sample")
    native = Machine(root / "native").go("build", "-o", str(root / "native.bin"), ".", cwd=module, GOCACHEPROG="")
    native.check()
    helper = Machine(root / "helper")
    alone = helper.go("build", "-o", str(root / "helper.bin"), ".", cwd=module).check()
    assert alone.stats["puts"] > 0
    sha = digest(root / "native.bin")
    assert digest(root / "helper.bin") == sha, "the helper changed what go built"
    return Reference(module, sha, native.seconds, alone.seconds, helper.l1)

