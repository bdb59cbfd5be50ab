"""``AdminPrincipal``, the dependency the admin routes declare, on the real app with real tokens.

The admin routes themselves are another issue's (test_matrix.ADMIN_ROUTES checks them once they are
served); this mounts one route the way they will and crosses its boundary from every role.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from server.deps import AdminPrincipal
from tests.auth.issuer import AUDIENCE, Issuer, k8s_claims
from tests.auth.probe import bearer
from tests.gate.conftest import in_process

pytestmark = pytest.mark.anyio


async def test_only_admins_pass(tmp_path: Path) -> None:
    prow = Issuer("https://prow.example/issuer")
    config = {
        "auth": {
            "issuers": [{"issuer": prow.name, "audiences": [AUDIENCE],
                         "jwks_file": str(prow.write_jwks(tmp_path / "jwks.json"))}],
            "rules": [{"subject": f"system:serviceaccount:test-pods:{role}", "role": role}
                      for role in ("reader", "writer", "admin")],
        }
    }
    async with in_process(tmp_path, config) as gate:

        async def probe(principal: AdminPrincipal) -> dict[str, str]:
            return {"admin": principal.subject}

        gate.app.add_api_route("/v1/admin/probe", probe)
        for role in ("reader", "writer"):
            resp = await gate.client.get("/v1/admin/probe", headers=bearer(prow.sign(k8s_claims(prow.name, role))))
            assert resp.status_code == 403 and resp.json() == {"error": f"role {role} is not admin"}
        resp = await gate.client.get("/v1/admin/probe", headers=bearer(prow.sign(k8s_claims(prow.name, "admin"))))
        assert resp.status_code == 200 and resp.json() == {"admin": "system:serviceaccount:test-pods:admin"}
        resp = await gate.client.get("/v1/admin/probe")
        assert resp.status_code == 401
