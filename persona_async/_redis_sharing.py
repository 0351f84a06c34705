"""Identical requests across processes: one create between every process sharing a Redis.

Processes whose lanes share a ``RedisLimiter`` (same provider kind and API key) agree through
one Redis key per identical request (the SHA-256 of the provider's URL and the encoded body,
under the limiter's ``{kind:key hash}`` namespace; never the key, never the body):

* ``F:<token>``: a process owns the flight: it sends, and renews a **lease** (``lease``
  seconds, renewed every third of it) while the request is in flight. Others wait, polling
  at growing intervals (50 ms to 0.5 s), within their callers' deadlines. An owner that dies
  stops renewing: when the lease runs out, a waiter takes the flight and sends.
* ``D:<token>:<persona>``: the persona made, kept ``remember_for`` seconds; a process asking
  for the same request gets it without sending. With ``remember_for=0`` it is kept only for
  the processes that waited for that flight (one lease), then overwritten by the next claim.
* ``U:<token>``: sent and lost (a persona may exist): the processes that waited for it fail
  with ``OutcomeUnknownError`` rather than resend; a later call sends again, as in-process.
* A failure deletes the key: a process that waited, or calls later, sends the request itself.

When Redis cannot be reached the request fails, unsent, with ``RedisUnavailableError``, as
the limiter does (it could not take a start either), through the lane limiter's connection
and outage state: logged once per outage, failing at once until its ``recheck``. With
``fallback="local"`` it is sent without asking Redis, so identical requests are shared within
each process only until Redis answers again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, Protocol

import anyio

from ._exceptions import (
    OutcomeUnknownError,
    PersonaError,
    ProviderTimeoutError,
    RedisUnavailableError,
    _MaybeSent,
)
from ._models import Persona
from ._providers import Provider

__all__ = ["DEFAULT_LEASE", "FlightsOwner", "RedisFlights"]

logger = logging.getLogger("persona_async")

#: ``run(script, keys, args)``: a Lua script's reply; raises ``RedisUnavailableError``.
RunScript = Callable[[str, Sequence[str], Sequence["str | int"]], Awaitable[Any]]

#: Seconds a process owns an identical request's flight without renewing it: how long the
#: others wait for a process that died mid-flight before one of them sends.
DEFAULT_LEASE = 10.0
_POLL_FIRST, _POLL_MAX = 0.05, 0.5  # a waiter's first and longest pause between looks

# KEYS[1]: the request's record. ARGV: mode, token, milliseconds, then for "claim" whether a
# persona made is an answer ('1'/'0') and the token of the flight the caller waited for, for
# "D"/"U" the record's payload. Tokens are 16 hex characters.
_SCRIPT = """
local v = redis.call('GET', KEYS[1])
local mode, token = ARGV[1], ARGV[2]
local mine = v == ('F:' .. token)
if mode == 'claim' then
  if v then
    local kind, owner = string.sub(v, 1, 1), string.sub(v, 3, 18)
    if kind == 'F' or (kind == 'D' and ARGV[4] == '1') or owner == ARGV[5] then return v end
  end
  redis.call('SET', KEYS[1], 'F:' .. token, 'PX', ARGV[3])
  return ''
elseif mode == 'renew' then
  if mine then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
  return ''
elseif mode == 'release' then
  if mine then redis.call('DEL', KEYS[1]) end
  return ''
end
if v == false or mine then
  redis.call('SET', KEYS[1], mode .. ':' .. token .. ':' .. ARGV[4], 'PX', ARGV[3])
end
return ''
"""


class FlightsOwner(Protocol):
    """What the flights read of their ``RedisLimiter`` (a protocol, so that this module need
    not import ``persona_async.redis``, which imports it)."""

    prefix: str
    lease: float
    fallback: Literal["local"] | None


class RedisFlights:
    """One lane's ``FlightStore`` on its ``RedisLimiter``'s Redis. See the module docstring."""

    __slots__ = ("_owner", "_prefix", "_provider", "_run")

    def __init__(self, owner: FlightsOwner, provider: Provider, run: RunScript) -> None:
        self._owner = owner
        self._provider = provider
        self._run = run  # the lane limiter's: its connection, its outage state and log
        # The limiter's hash tag: one Redis Cluster slot per provider kind and key.
        self._prefix = f"{owner.prefix}:{{{provider.kind}:{provider.key_fingerprint}}}:create:"

    def _key(self, body: bytes) -> str:
        digest = hashlib.sha256(self._provider.url.encode() + b"\0" + body).hexdigest()
        return self._prefix + digest[:32]

    async def once(
        self,
        body: bytes,
        send: Callable[[], Awaitable[Persona]],
        *,
        remember_for: float,
        time_left: Callable[[], float],
        made: Callable[[str, str | None], Persona],
    ) -> Persona:
        key, token = self._key(body), secrets.token_hex(8)
        lease_ms = _ms(self._owner.lease)
        waited, pause = "", _POLL_FIRST
        while True:
            try:
                record = await self._call(
                    key, "claim", token, lease_ms, "1" if remember_for else "0", waited
                )
            except RedisUnavailableError:
                if self._owner.fallback is None:
                    raise
                return await send()  # fallback="local": shared within this process only
            except BaseException:
                # Cancelled while claiming: the claim may have been made; give it back.
                with anyio.CancelScope(shield=True):
                    await self._quietly(key, "release", token, lease_ms, "")
                raise
            if record == "":
                break  # the flight is this process's
            kind, flight, payload = record[:1], record[2:18], record[19:]
            if kind == "D":
                persona_id, provider_task_id = json.loads(payload)
                return made(persona_id, provider_task_id)
            if kind == "U":
                raise OutcomeUnknownError(
                    "an identical request sent by another process sharing the limiter's Redis "
                    "was lost; a persona may or may not exist (asked again, it is sent again)",
                    provider=self._provider.name,
                    attempts=0,
                )
            waited, left = flight, time_left()
            if left <= 0:
                raise ProviderTimeoutError(
                    "the call's deadline passed while an identical request was in flight in "
                    "another process sharing the limiter's Redis: it was not sent from here",
                    sent=False,
                    retryable=True,
                    provider=self._provider.name,
                    attempts=0,
                )
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, _POLL_MAX)
        return await self._fly(key, token, lease_ms, send, remember_for)

    async def _fly(
        self,
        key: str,
        token: str,
        lease_ms: int,
        send: Callable[[], Awaitable[Persona]],
        remember_for: float,
    ) -> Persona:
        """Send as the flight's owner, renewing its lease, then leave its outcome in Redis."""
        # A task of its own (not a task group: an error from send() must reach the caller
        # as itself), ended with the flight.
        renewing = asyncio.ensure_future(self._renew(key, token, lease_ms))
        try:
            persona = await send()
        except PersonaError as err:
            lost = isinstance(err, OutcomeUnknownError) or (
                isinstance(err, _MaybeSent) and err.sent and err.attempts > 0
            )
            await self._quietly(key, "U" if lost else "release", token, lease_ms, "")
            raise
        except BaseException:  # the client is closing with the request maybe on the wire
            with anyio.CancelScope(shield=True):
                await self._quietly(key, "U", token, lease_ms, "")
            raise
        finally:
            renewing.cancel()
        keep_ms = _ms(remember_for) if remember_for else lease_ms
        payload = json.dumps([persona.persona_id, persona.provider_task_id])
        await self._quietly(key, "D", token, keep_ms, payload)
        return persona

    async def _renew(self, key: str, token: str, lease_ms: int) -> None:
        while True:
            await asyncio.sleep(lease_ms / 3000)
            await self._quietly(key, "renew", token, lease_ms, "")

    async def _quietly(self, key: str, mode: str, token: str, ms: int, payload: str) -> None:
        """A write whose failure costs only the sharing: the request's answer stands."""
        try:
            await self._call(key, mode, token, ms, payload, "")
        except RedisUnavailableError as err:
            logger.warning(
                "lane %s: could not record an identical request's %s in Redis: %s",
                self._provider.name,
                "lease" if mode == "renew" else "outcome",
                err.message,
            )

    async def _call(
        self, key: str, mode: str, token: str, ms: int, payload: str, waited: str
    ) -> str:
        reply = await self._run(_SCRIPT, [key], [mode, token, ms, payload, waited])
        return reply.decode() if isinstance(reply, bytes) else str(reply)

    async def aclose(self) -> None:
        """Nothing of its own to close: the lane's limiter owns the connection."""


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
