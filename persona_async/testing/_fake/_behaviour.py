"""How a :class:`FakeProvider` answers one request.

A request is recorded, then judged in order: an injected or random :class:`Fault`, maintenance
(455), the key (401), the per-key rate window (429), and the contract's own rules (422, 409);
what passes creates a persona, or submits an async task, or answers a task's status query.
``FakeProvider`` (``_server``) sets the state up and runs the server; this base class holds the
slots of the state it reads and changes, ``Knobs`` (``_knobs``) those of what a test sets.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from typing import Any

from aiohttp import web

from ._contract import _Contract, _record, find_status
from ._faults import _PASS_THROUGH, Fault, _reset_connection
from ._knobs import Knobs
from ._limits import RateWindow
from ._registry import ASYNC, BY_PATH
from ._songs import Songs
from ._tasks import TaskBook
from ._wire import (
    _MESSAGES,
    Kind,
    RequestRecord,
    _envelope,
    _nginx_page,
    _Outcome,
    _retry_after_headers,
)


def _reject(contract: _Contract, code: int, message: str) -> _Outcome:
    status, body = contract.error(code, message)
    return status, code, body, None


class Behaviour(Knobs):
    """The request handling of :class:`FakeProvider` (a base class)."""

    __slots__ = (
        "_codes",
        "_faults_served",
        "_keys",
        "_kinds",
        "_next_persona",
        "_record_requests",
        "_request_count",
        "_resets",
        "_rng",
        "_tasks",
        "creations",
        "failing_tasks",
        "in_flight",
        "latency",
        "max_concurrent",
        "missing_tasks",
        "personas",
        "rate_limit_http",
        "requests",
        "retry_after",
        "songs",
        "task_seconds",
        "window_violations",
    )

    # The state read and changed here (its slots are here too); FakeProvider sets it up in
    # __init__. The public part:
    #: Every request received, in arrival order (empty if ``record_requests`` is off).
    requests: list[RequestRecord]
    #: Personas created per ``(kind, audio_id)``; a crun count above 1 is a duplicate.
    creations: collections.Counter[tuple[str, str]]
    #: Persona id -> what it was created from (kind, task_id, audio_id, name, ...).
    personas: dict[str, dict[str, Any]]
    #: Task ids that answer 422 as if not found / not finished.
    missing_tasks: set[str]
    #: Music tasks the status endpoints answer for (see ``status.Songs``).
    songs: Songs
    #: Requests rejected by the rate window.
    window_violations: int
    #: Most contract requests ever handled at once, and how many are being handled now.
    max_concurrent: int
    in_flight: int
    latency: float
    #: Async contracts: seconds a persona task runs after its submit.
    task_seconds: float
    #: Async contracts: clip ids whose persona task fails (``failCode`` / ``error``).
    failing_tasks: set[str]
    rate_limit_http: bool
    retry_after: float | None
    _keys: tuple[str, ...]
    _record_requests: bool
    _request_count: int
    _kinds: collections.Counter[str]
    _codes: collections.Counter[int]
    _resets: int
    _faults_served: int
    _next_persona: int
    _rng: random.Random
    _tasks: TaskBook

    # -- request handling ------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        if self.in_flight > self.max_concurrent:
            self.max_concurrent = self.in_flight
        try:
            arrived = time.monotonic()
            body = await request.read()
            contract = BY_PATH.get(request.path) if request.method == "POST" else None
            kind: Kind = "other" if contract is None else contract.kind
            task_id = None
            song = self.songs.claims("GET", request.path, request.query)  # shared status paths
            found = find_status(ASYNC, request.method, request.path, request.query, None)
            if found is not None and not song:  # a persona task's status query
                contract, task_id = found
                kind = f"{contract.kind}-status"  # type: ignore[assignment]
            record = _record(request, body, kind, arrived, contract)
            self._request_count += 1
            self._kinds[kind] += 1
            if self._record_requests:
                self.requests.append(record)
            if contract is None:
                await self._wait(self.latency)
                status = self.songs.answer(record, self._keys)  # a status query, if it is one
                return self._send(
                    record, status or (404, 404, _envelope("msg", 404, "not found"), None)
                )
            return await self._respond(request, contract, record, task_id)
        finally:
            self.in_flight -= 1

    async def _respond(
        self, request: web.Request, contract: _Contract, record: RequestRecord, task_id: str | None
    ) -> web.StreamResponse:
        fault = self._next_fault(record.kind)
        if fault is not None:
            self._faults_served += 1
            if fault.kind not in _PASS_THROUGH:
                await self._wait(self.latency + fault.seconds)
                if fault.kind == "reset_before":
                    return self._reset(request)
                return self._send_fault(contract, record, fault)
        outcome = self._admit(contract, record, windowed=task_id is None)
        if outcome is None:
            extra = fault.seconds if fault is not None else 0.0
            await self._wait(self.latency + extra)
            if task_id is None:
                outcome = self._process(contract, record)
            else:
                outcome = (*self._task_status(contract, task_id), None)
        else:
            await self._wait(self.latency)
        if fault is not None and fault.kind == "reset_after":
            return self._reset(request)
        return self._send(record, outcome)

    def _next_fault(self, kind: str) -> Fault | None:
        for index, injection in enumerate(self._injections):
            if injection.kind is None or injection.kind == kind:
                injection.remaining -= 1
                if not injection.remaining:
                    del self._injections[index]
                return injection.fault
        if self._fault_rate and self._rng.random() < self._fault_rate:
            return self._rng.choice(self._fault_mix)
        return None

    def _admit(
        self, contract: _Contract, record: RequestRecord, *, windowed: bool = True
    ) -> _Outcome | None:
        """Judge maintenance, key and rate window at arrival; ``None`` lets the request in."""
        if record.arrived < self._maintenance_until:
            return _reject(contract, 455, _MESSAGES[455])
        api_key = record.api_key
        if api_key is None or api_key not in self._keys:
            return _reject(contract, 401, _MESSAGES[401])
        limit = self._rate_limit
        # A fresh reading rather than `arrived` keeps each window sorted even when bodies of
        # concurrent requests finish reading out of arrival order.
        if windowed and limit is not None and not self._take_slot(api_key, time.monotonic(), limit):
            self.window_violations += 1
            forced = 429 if self.rate_limit_http else None
            status, body = contract.error(429, _MESSAGES[429], forced)
            return status, 429, body, _retry_after_headers(self.retry_after)
        return None

    def _take_slot(self, api_key: str, now: float, limit: int) -> bool:
        window = self._windows.get(api_key)
        if window is None:
            window = self._windows[api_key] = RateWindow(
                self._rate_shape, limit, self._rate_period, count_rejected=self._count_rejected
            )
        return window.admit(now)

    def _process(self, contract: _Contract, record: RequestRecord) -> _Outcome:
        if record.json is None:
            return _reject(contract, 422, "request body must be a JSON object")
        body = contract.fields_of(record.json)
        if isinstance(body, str):
            return _reject(contract, 422, body)
        error = contract.validate(body)
        if error is not None:
            return _reject(contract, 422, error)
        if body[contract.task or contract.audio] in self.missing_tasks:
            return _reject(contract, 422, contract.missing_task_message)
        refused = self.songs.refuse_create(contract, body)
        if refused is not None:
            return refused
        audio_key = (contract.kind, body[contract.audio])
        if contract.one_per_audio and self.creations[audio_key]:
            return _reject(contract, 409, _MESSAGES[409])
        persona_id = f"persona_{self._next_persona}"
        self._next_persona += 1
        self.creations[audio_key] += 1
        details: dict[str, Any] = {
            "kind": contract.kind,
            "task_id": body.get(contract.task) if contract.task else None,
            "audio_id": body[contract.audio],
            "name": body[contract.name],
            "description": body.get(contract.description),
        }
        for wire, name in contract.fields():
            if wire is not None and body.get(wire) is not None:
                details[name] = body[wire]
        if contract in ASYNC:
            return self._submit(contract, body[contract.audio], persona_id, details)
        self.personas[persona_id] = details
        status, reply = contract.success(persona_id, body)
        return status, 200, reply, None

    def _submit(
        self, contract: _Contract, audio_id: str, persona_id: str, details: dict[str, Any]
    ) -> _Outcome:
        fails = audio_id in self.failing_tasks
        task = self._tasks.submit(contract.kind, audio_id, persona_id, self.task_seconds, fails)
        if not fails:  # the persona exists once the task is made; it is readable when done
            self.personas[persona_id] = details | {"provider_task_id": task.task_id}
        if contract.submit_reply is not None:
            return 200, 200, contract.submit_reply(task), None
        status, reply = contract.success(task.task_id, {})
        return status, 200, reply, None

    def _task_status(self, contract: _Contract, task_id: str) -> tuple[int, int, bytes]:
        reply = contract.status.task if contract.status is not None else None
        assert reply is not None  # only async contracts reach here
        return reply(self._tasks.polled(contract.kind, task_id), time.monotonic())

    def _send(self, record: RequestRecord, outcome: _Outcome) -> web.Response:
        status, code, body, headers = outcome
        record.http_status = status
        record.response_code = code
        self._codes[code] += 1
        return web.Response(
            status=status, body=body, content_type="application/json", headers=headers
        )

    def _send_fault(self, contract: _Contract, record: RequestRecord, fault: Fault) -> web.Response:
        headers = _retry_after_headers(fault.retry_after)
        if fault.code is not None:  # envelope and http
            forced = fault.status if fault.kind == "http" else None
            status, body = contract.error(fault.code, fault.message, forced)
            return self._send(record, (status, fault.code, body, headers))
        if fault.kind == "truncated":
            details = {contract.name: "n", contract.description: "d"}
            whole = contract.success("persona_0", details)[1]
            raw = whole[: len(whole) // 2]
        elif fault.kind == "html":
            raw = _nginx_page(fault.status)
        elif fault.kind == "redirect":
            headers = {"Location": fault.location}
            raw = b""
        else:  # empty, body
            raw = fault.raw
        record.http_status = record.response_code = fault.status
        self._codes[fault.status] += 1
        return web.Response(
            status=fault.status, body=raw, content_type=fault.content_type, headers=headers
        )

    def _reset(self, request: web.Request) -> web.Response:
        self._resets += 1
        return _reset_connection(request)

    @staticmethod
    async def _wait(seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds)
