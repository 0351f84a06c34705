"""The knobs a test turns on a :class:`FakeProvider`: rate limit, maintenance, faults.

The base of ``Behaviour`` (``_behaviour``), which reads what they set when a request arrives;
``FakeProvider`` (``_server``) sets their defaults up in ``__init__``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from ._faults import DEFAULT_FAULT_MIX, Fault, _Injection
from ._limits import RATE_SHAPES, RateShape, RateWindow
from ._registry import ASYNC, CONTRACTS

__all__ = ["Knobs"]


class Knobs:
    """The behaviour knobs of :class:`FakeProvider` (a base class), and the state they set."""

    __slots__ = (
        "_count_rejected",
        "_fault_mix",
        "_fault_rate",
        "_injections",
        "_maintenance_until",
        "_rate_limit",
        "_rate_period",
        "_rate_shape",
        "_windows",
    )

    _count_rejected: bool
    _fault_mix: tuple[Fault, ...]
    _fault_rate: float
    _injections: list[_Injection]
    _maintenance_until: float
    _rate_limit: int | None
    _rate_period: float
    _rate_shape: RateShape
    _windows: dict[str, RateWindow]

    def set_rate_limit(
        self,
        limit: int | None,
        period: float | None = None,
        *,
        shape: RateShape | None = None,
        count_rejected: bool | None = None,
    ) -> None:
        """Change the per-key rate limit; ``None`` keeps that setting as it is.

        A new limit, period or shape starts every key's window afresh.
        """
        if shape is not None and shape not in RATE_SHAPES:
            raise ValueError(f"rate_shape must be one of {', '.join(RATE_SHAPES)}, got {shape!r}")
        if limit is not None and limit < 1:
            raise ValueError("rate_limit must be >= 1 or None")
        period = self._rate_period if period is None else period
        if period <= 0:
            raise ValueError("rate_period must be > 0")
        self._rate_limit = limit
        self._rate_period = period
        if shape is not None:
            self._rate_shape = shape
        if count_rejected is not None:
            self._count_rejected = count_rejected
        self._windows.clear()

    def maintenance(self, seconds: float) -> None:
        """Answer every contract request with code 455 for the next ``seconds``."""
        self._maintenance_until = time.monotonic() + seconds

    def end_maintenance(self) -> None:
        self._maintenance_until = 0.0

    def inject(self, fault: Fault, times: int = 1, path: str | None = None) -> None:
        """Queue ``fault`` for the next ``times`` contract requests.

        Queued faults are used first-in first-out, one per request, before random ones.
        ``path`` names a contract kind (``"crun"``, ``"family"``, ``"acedata"``, ...), or an
        async contract's status queries (``"kie-jobs-status"``, ``"evolink-status"``), and
        reserves the fault for those requests; other requests pass it by. Requests to unknown
        paths never consume faults.
        """
        if times < 1:
            raise ValueError("times must be >= 1")
        kinds = {c.kind for c in CONTRACTS} | {f"{c.kind}-status" for c in ASYNC}
        if path is not None and path not in kinds:
            raise ValueError(f"path must be None or one of {', '.join(sorted(kinds))}")
        self._injections.append(_Injection(fault, times, path))

    def random_faults(self, rate: float, faults: Sequence[Fault] | None = None) -> None:
        """Give each contract request a ``rate`` chance of a fault drawn from ``faults``.

        ``faults`` defaults to :data:`DEFAULT_FAULT_MIX`; repeat an entry to weight it.
        Draws use the generator seeded at construction, so a run is reproducible as long as
        requests arrive in the same order.
        """
        if not 0.0 <= rate <= 1.0:
            raise ValueError("fault rate must be between 0 and 1")
        mix = DEFAULT_FAULT_MIX if faults is None else tuple(faults)
        if rate and not mix:
            raise ValueError("faults must not be empty")
        self._fault_rate = rate
        self._fault_mix = mix
