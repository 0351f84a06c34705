"""``persona-async demo``: a real batch against the embedded fake provider, no key, no network.

Two lanes (crun and kie) against one ``FakeProvider`` on loopback, which allows each key kie's
published 20 requests per 10 seconds compressed tenfold (20 per second), so a few hundred
personas take seconds. crun publishes no limit, so its lane is configured too high (40 per
second), as users often do: it learns the real 20 from the 429s and the summary says so. On the
way: random 500s on both lanes, a maintenance window (455) that pauses both (one fake serves
both), and connection resets after creating on kie. Resets go to kie
only, on purpose: the family detects duplicates, so the SDK resends and reports the 409 as
``exists`` (the persona our earlier attempt made); a reset on crun would honestly end as
``OutcomeUnknownError``, which is a failure the demo's exit code 0 could not claim.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

import msgspec

from .._providers import CrunProvider, KieProvider
from ..testing import FakeProvider, Fault
from ._batch import Batch
from ._gate import Gate
from ._input import open_input
from ._journal import Journal
from ._progress import Terminal
from ._summary import Tally

__all__ = ["DEFAULT_COUNT", "run_demo"]

DEFAULT_COUNT = 300
_RATE, _PERIOD = 20, 1.0
#: crun's lane is configured above the fake's real limit: it has to learn the real one.
_CRUN_CONFIGURED = 40
_LATENCY = 0.05
_FAULT_RATE = 0.03
_NAMES = ("Neon Siren", "Velvet Static", "Glass Choir", "Low Tide", "Copper Bloom", "Night Bus")
_STYLES = ("smoky late-night R&B", "bright synth-pop", "lo-fi bedroom folk", "gritty garage rock")


class _Director:
    """Stages the faults as the run progresses (by items done, so any count sees them all)."""

    def __init__(self, fake: FakeProvider, count: int) -> None:
        self._fake = fake
        self._count = count
        self._resets_at = max(1, count // 5)
        self._maintenance_at = max(2, count * 9 // 20)
        self._staged: set[str] = set()

    def __call__(self, tally: Tally) -> None:
        if tally.done >= self._resets_at and "resets" not in self._staged:
            self._staged.add("resets")
            self._fake.inject(Fault.reset_after(), times=2, path="family")
            self._fake.inject(Fault.html(502), path="family")
        if tally.done >= self._maintenance_at and "455" not in self._staged:
            self._staged.add("455")
            self._fake.maintenance(0.8)


def _items(count: int) -> Iterator[dict[str, object]]:
    for n in range(1, count + 1):
        crun = n % 2 == 1
        item: dict[str, object] = {
            "id": f"demo-{n:05d}",
            "provider": "crun" if crun else "kie",
            "task_id": f"task-{n:05d}",
            "audio_id": f"clip-{n:05d}",
            "name": _NAMES[n % len(_NAMES)],
            "description": f"Persona {n} of the demo batch",
        }
        if n % 3 == 0:
            item["style"] = _STYLES[n % len(_STYLES)]
        if not crun and n % 4 == 0:
            item["vocal_start"], item["vocal_end"] = 5.0, 25.0
        yield item


def _write_input(path: str, count: int) -> None:
    with open(path, "wb") as file:
        for item in _items(count):
            file.write(msgspec.json.encode(item) + b"\n")


async def run_demo(count: int, *, out: str | None, terminal: Terminal) -> int:
    """Run the demo batch; return the batch's exit code."""
    with tempfile.TemporaryDirectory(prefix="persona-async-demo-") as tmp:
        input_path = os.path.join(tmp, "personas.jsonl")
        _write_input(input_path, count)
        journal_path = out or os.path.join(tmp, "results.jsonl")
        keys = {"crun": "demo-crun-key", "kie": "demo-kie-key"}
        async with FakeProvider(
            api_keys=tuple(keys.values()),
            rate_limit=_RATE,
            rate_period=_PERIOD,
            latency=_LATENCY,
            seed=1,
            record_requests=False,
        ) as fake:
            fake.random_faults(_FAULT_RATE, (Fault.http(500),))
            gate = Gate()
            providers = [
                cls(
                    api_key=keys[cls.kind],
                    base_url=fake.url,
                    rate_limit=_CRUN_CONFIGURED if cls is CrunProvider else _RATE,
                    rate_period=_PERIOD,
                    max_concurrency=4,
                    limiter=gate,
                )
                for cls in (CrunProvider, KieProvider)
            ]
            terminal.say(
                f"persona-async demo: {count} personas across crun and kie on a local fake "
                f"provider ({fake.url}) that allows {_RATE} requests per {_PERIOD:g}s per key "
                "(kie's published 20 per 10 s, compressed tenfold). crun publishes no limit and "
                f"its lane is configured at {_CRUN_CONFIGURED}: it learns the real one from the "
                "429s. On the way: random 500s, "
                "a maintenance window that pauses both lanes, and connection resets on kie "
                "after the persona was made: kie is asked again and its 409 is counted as "
                "'exists' (the persona our first attempt made, not a second one). No key, no "
                "network.\n"
            )
            entries = open_input(input_path, {p.name: p for p in providers})
            with contextlib.closing(entries):
                batch = Batch(
                    providers=providers,
                    client_options={
                        # Resets, a 502 and a random 500 can all land on one kie item.
                        "max_retries": 5,
                        "backoff_initial": 0.05,
                        "backoff_max": 1.0,
                        "retry_after_max": 2.0,
                        "deadline": 60.0,
                        "retry_budget": 20,
                    },
                    entries=entries,
                    journal=Journal.open(journal_path),
                    gate=gate,
                    terminal=terminal,
                    on_progress=_Director(fake, count),
                    journal_label=out or "temporary (`persona-async demo --out FILE` keeps it)",
                )
                code = await batch.run()
        return code
