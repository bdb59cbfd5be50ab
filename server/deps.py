"""The dependencies every route declares: the gate's parts, and who is calling with what rights.

This is the one place that reads the Authorization header and decides rights; routes state what
they need with these ``Annotated`` aliases::

    async def get_entry(ns: str, principal: NamespaceReader, gate: GateDep): ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, cast

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
    "AdminPrincipal",
    "CurrentPrincipal",
    "Gate",
    "GateDep",
    "NamespaceReader",
    "NamespaceWriter",
    "get_gate",
    "get_principal",
]


@dataclass(frozen=True)
class Gate:
    """The parts the routes use, built once in the app's lifespan."""

    settings: Settings
    metrics: GateMetrics
    storage: MeteredStorage
    entries: EntryService
    authenticator: Authenticator


def get_gate(request: Request) -> Gate:
    return cast(Gate, request.app.state.gate)


GateDep = Annotated[Gate, Depends(get_gate)]


async def get_principal(request: Request, gate: GateDep) -> Principal:
    return await gate.authenticator.authenticate(request.headers.get("authorization"))


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


async def _namespace_reader(ns: str, principal: CurrentPrincipal) -> Principal:
    check_namespace(ns)
    if not principal.can_read(ns):
        raise Forbidden(f"namespace {ns} not granted")
    return principal


async def _namespace_writer(ns: str, principal: CurrentPrincipal) -> Principal:
    check_namespace(ns)
    if principal.role < Role.WRITER:
        raise Forbidden(f"role {principal.role.label} may not write")
    if not principal.can_write(ns):
        raise Forbidden(f"namespace {ns} not granted")
    return principal


async def _admin(principal: CurrentPrincipal) -> Principal:
    if not principal.is_admin:
        raise Forbidden(f"role {principal.role.label} is not admin")
    return principal


#: The caller, allowed to read the path's namespace ``{ns}`` (400 for a bad name, 403 if not granted).
NamespaceReader = Annotated[Principal, Depends(_namespace_reader)]
#: The caller, allowed to write the path's namespace ``{ns}``.
NamespaceWriter = Annotated[Principal, Depends(_namespace_writer)]
#: The caller, an admin.
AdminPrincipal = Annotated[Principal, Depends(_admin)]
