"""Bearer tokens: who is calling and what they may do.

Metadata `authorization: Bearer <secret>`. A token is either admin (every call) or bound
to channels: it may reserve, commit, release, extend and amend (and their batch and
Session forms), read availability and reservations, and watch, for those channels only.
A channel token naming a reservation of another channel is answered as if the
reservation did not exist (OUTCOME_NOT_FOUND, or NOT_FOUND for GetReservation), so a
token never learns which ids other channels use. Ids are one namespace, so reserving with
another channel's id is OUTCOME_ID_CONFLICT, with nothing of that reservation in it.

Each token may carry a rate (server/rates.py): its Caller holds the token's bucket, so
the hot path finds it without a lookup.

Secrets are compared in constant time against every configured token and never logged:
both sides are hashed (SHA-256) first, so the comparison takes as long whatever the
secrets' lengths. With no tokens configured, auth is off and every caller is admin.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc

from stockgate.engine import Outcome, Result

from .config import TokenGrant
from .rates import Bucket
from .status import permission_denied, unauthenticated

AUTH_HEADER = "authorization"
BEARER = "bearer "


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: `channels` is None for admin (every channel); `rate` is
    the token's bucket, None when it is unlimited."""

    name: str
    channels: frozenset[str] | None
    rate: Bucket | None = field(default=None, compare=False)

    @property
    def admin(self) -> bool:
        """True for an admin token (or with auth off)."""
        return self.channels is None

    def may_use(self, channel: str) -> bool:
        """True when the caller may act for `channel`."""
        return self.channels is None or channel in self.channels


ANYONE = Caller("anonymous", None)  # auth is off
NOT_FOUND_RESULT = Result(Outcome.NOT_FOUND)  # what a channel token sees of another's reservation
CONFLICT_RESULT = Result(Outcome.ID_CONFLICT)  # ... and of another's id it reserved with


class Authenticator:
    """Resolves a call's token to a Caller, or refuses it."""

    def __init__(self, tokens: Mapping[str, TokenGrant],
                 rates: Mapping[str, Bucket] | None = None) -> None:
        self.enabled = bool(tokens)
        rates = rates or {}
        self._tokens = [
            (_digest(g.secret.encode()),
             Caller(name, None if g.admin else frozenset(g.channels), rates.get(name)))
            for name, g in tokens.items()
        ]

    def caller(self, context: grpc.aio.ServicerContext) -> Caller:
        """The caller of this call; raises CallError UNAUTHENTICATED when the token is
        missing or unknown."""
        if not self.enabled:
            return ANYONE
        header = None
        for key, value in context.invocation_metadata() or ():
            if key == AUTH_HEADER:
                header = value
                break
        if header is None:
            raise unauthenticated("no token: send metadata 'authorization: Bearer <token>'")
        if isinstance(header, bytes):
            header = header.decode("latin-1")
        if header[:len(BEARER)].lower() != BEARER:
            raise unauthenticated("the authorization metadata must be 'Bearer <token>'")
        presented = _digest(header[len(BEARER):].strip().encode())
        found = None
        # Every token is compared, found or not, and digests all have one length, so
        # timing tells nothing about which one (or which prefix, or how long) matched.
        for secret, caller in self._tokens:
            if hmac.compare_digest(secret, presented) and found is None:
                found = caller
        if found is None:
            raise unauthenticated("the token is not known to this server")
        return found

    def admin(self, context: grpc.aio.ServicerContext) -> Caller:
        """The caller, who must be admin; else CallError PERMISSION_DENIED."""
        caller = self.caller(context)
        if not caller.admin:
            raise permission_denied(f"token {caller.name!r} is bound to channels; this call "
                                    "needs an admin token")
        return caller

    def for_channel(self, context: grpc.aio.ServicerContext, channel: str,
                    field: str = "channel") -> Caller:
        """The caller, who must be admin or bound to `channel`."""
        caller = self.caller(context)
        if not caller.may_use(channel):
            raise denied_channel(caller, channel, field)
        return caller


def own(channels: frozenset[str], r: Any) -> Any:
    """What a channel token may see of an answer: an ID_CONFLICT with a reservation of
    a channel not among `channels` loses the reservation (ids are one namespace: the
    conflict tells only that the id is taken)."""
    if type(r) is Result and r.outcome == Outcome.ID_CONFLICT and r.reservation is not None \
            and r.reservation.channel not in channels:
        return CONFLICT_RESULT
    return r


def _digest(secret: bytes) -> bytes:
    return hashlib.sha256(secret).digest()


def denied_channel(caller: Caller, channel: str, field: str = "channel"):
    """PERMISSION_DENIED for acting for a channel not among the token's, naming `field`."""
    return permission_denied(f"{field} {channel!r} is not one of token {caller.name!r}'s "
                             "channels", field)
