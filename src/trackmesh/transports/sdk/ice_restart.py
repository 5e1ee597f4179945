"""The SDK's ``restart_ice`` request (HTTP ``POST /webrtc/:conn/restart-ice``): the decisions of an ICE
restart of a live SDK connection, out of the driver (runtime/sdk_worker.py), which only supplies our
local parameters for new credentials and routes the new ufrag on its port.

Order matters: the offer is checked first (m-lines added, stopped or recycled included) with the
current credentials, so a refused offer leaves the session as it was; only then does the ICE agent
restart (RFC 8445 s9) when the client's credentials changed, and the answer is planned again with
our new ones. Sans-IO: ``now`` is an argument.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from trackmesh.transports.sdk.protocol import shared_pb2
from trackmesh.transports.sdk.renegotiation import apply_plan, plan_for
from trackmesh.transports.sdk.session import SdkSession, TokenClaims, check_join
from trackmesh.transports.webrtc.answer import LocalParams

__all__ = ["IceRestartAnswer", "restart_claims_refusal", "restart_ice"]


@dataclass(frozen=True)
class IceRestartAnswer:
    sdp: str
    #: Our new local parameters when the client's ICE credentials changed (route ``local.ice_ufrag``
    #: to the session), None when the offer kept them (a plain renegotiation).
    local: LocalParams | None


def restart_claims_refusal(sdk: SdkSession, claims: TokenClaims, same_token: bool) -> str | None:
    """Why a restart request may not take over a joined session (its token names another room or peer),
    or None. A request with the token that created the session is always allowed."""
    if not sdk.joined or same_token:
        return None
    return check_join(claims, sdk.endpoint.room or "", sdk.endpoint.peer or "")


def restart_ice(
    sdk: SdkSession,
    now: float,
    offer: str,
    tracks: shared_pb2.Tracks | None,
    local_params: Callable[[str, str], LocalParams],
) -> IceRestartAnswer:
    """Answer a restart offer; raises :class:`~trackmesh.transports.sdk.errors.RpcFailure` (``InvalidSdp``)
    before anything changed when the offer is refused. ``local_params(ufrag, pwd)``: our side of an
    answer with these new local ICE credentials."""
    probe = plan_for(sdk, offer, tracks, ice_restart=True)
    ice = sdk.peer.ice
    remote = probe.answer.transport
    if remote.ice_ufrag == ice.remote_ufrag and remote.ice_pwd == ice.remote_pwd:
        return IceRestartAnswer(apply_plan(sdk, now, probe), None)
    creds = ice.restart(remote.ice_ufrag, remote.ice_pwd)
    local = local_params(creds.ufrag, creds.pwd)
    plan = plan_for(sdk, offer, tracks, local, ice_restart=True)
    return IceRestartAnswer(apply_plan(sdk, now, plan, local), local)
