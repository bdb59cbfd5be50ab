"""The dependencies routes declare: the gate's parts, and who is calling with what rights.

This is the one place that reads the Authorization header and decides rights; routes state what
they need with these ``Annotated`` aliases::

    async def get_entry(request: Request, access: NamespaceReader) -> Response: ...

Each alias is a single dependency that takes only the ``Request`` (the namespace comes from the
path parameters): FastAPI's per-request cost grows with every declared parameter and nested
dependency, about 15 µs each here. The hit path, a bare ASGI endpoint, calls ``read_access``
directly: the same check, without the dependency machinery.

Every refusal is logged with subject, role, namespace and reason (``server.auth`` logs how each
token was judged); an allowed request is not, as the hit path cannot afford a log line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from .auth import Authenticator
from .config import Settings
from .entries import EntryService
from .errors import Forbidden
from .identity import Principal, Role
from .metrics import GateMetrics
from .names import check_namespace
from .storage.metered import MeteredStorage

__all__ = [
    "Access",
    "AdminPrincipal",
    "CurrentPrincipal",
    "Gate",
    "GateDep",
    "NamespaceReader",
    "NamespaceWriter",
    "read_access",
    "write_access",
]

log = logging.getLogger("gocachegate.auth")


@dataclass(frozen=True)
class Gate:
    """The parts the routes use, built once in the app's lifespan."""

    settings: Settings
    metrics: GateMetrics
    storage: MeteredStorage
    entries: EntryService
    authenticator: Authenticator


@dataclass(frozen=True, slots=True)
class Access:
    """A caller allowed into the namespace of the request's path."""

    gate: Gate
    principal: Principal
    namespace: str


def _forbidden(principal: Principal, namespace: str, reason: str) -> Forbidden:
    log.info(
        "forbidden: subject=%s role=%s namespace=%s: %s", principal.subject, principal.role.label, namespace, reason
    )
    return Forbidden(reason)


async def _gate(request: Request) -> Gate:
    gate: Gate = request.app.state.gate
    return gate


async def _principal(request: Request) -> Principal:
    gate: Gate = request.app.state.gate
    return await gate.authenticator.authenticate(request.headers.get("authorization"))


async def read_access(request: Request) -> Access:
    """The caller, allowed to read the namespace in the path; raises Unauthorized, BadRequest, Forbidden."""
    gate: Gate = request.app.state.gate
    principal = await gate.authenticator.authenticate(request.headers.get("authorization"))
    namespace = check_namespace(request.path_params["ns"])
    if not principal.can_read(namespace):
        raise _forbidden(principal, namespace, f"namespace {namespace} not granted")
    return Access(gate, principal, namespace)


async def write_access(request: Request) -> Access:
    """The caller, allowed to write the namespace in the path."""
    gate: Gate = request.app.state.gate
    principal = await gate.authenticator.authenticate(request.headers.get("authorization"))
    namespace = check_namespace(request.path_params["ns"])
    if principal.role < Role.WRITER:
        raise _forbidden(principal, namespace, f"role {principal.role.label} may not write")
    if not principal.can_write(namespace):
        raise _forbidden(principal, namespace, f"namespace {namespace} not granted")
    return Access(gate, principal, namespace)


async def _admin(request: Request) -> Principal:
    principal = await _principal(request)
    if not principal.is_admin:
        raise _forbidden(principal, "-", f"role {principal.role.label} is not admin")
    return principal


#: The gate's parts (no identity check: for routes open to anyone).
GateDep = Annotated[Gate, Depends(_gate)]
#: The authenticated caller (401 without a valid token).
CurrentPrincipal = Annotated[Principal, Depends(_principal)]
#: A caller allowed to read the path's ``{ns}`` (400 for a bad name, 403 if not granted).
NamespaceReader = Annotated[Access, Depends(read_access)]
#: A caller allowed to write the path's ``{ns}``.
NamespaceWriter = Annotated[Access, Depends(write_access)]
#: An admin caller.
AdminPrincipal = Annotated[Principal, Depends(_admin)]
