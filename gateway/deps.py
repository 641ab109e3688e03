"""Typed dependencies shared by the gateway's own routers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from .authz import Principal

if TYPE_CHECKING:
    from .app import Gateway


def get_gateway(request: Request) -> Gateway:
    return request.app.state.gw  # type: ignore[no-any-return]


async def get_principal(request: Request) -> Principal:
    gw = get_gateway(request)
    principal = await gw.require_principal(request)
    gw.check_csrf(request, principal)
    gw.check_rate(principal)
    return principal


GatewayDep = Annotated["Gateway", Depends(get_gateway)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
