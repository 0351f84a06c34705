"""A lane's state machine: running, cooling after a 429, paused with one probe out, stopped.

::

    running --429/503--> cooling --cooldown over--> running
    running --455------> paused  --a probe succeeds--> running     (one probe at a time)
    any     --401/402--> stopped                                    (for good)

The lane (``_lane``) owns the queue, the workers and the attempt; it asks this what may go now
and tells it what the provider said. What a change of state does to the jobs waiting (they are
armed, a later maintenance gets a fresh allowance) is the lane's: ``on_change`` is called with
the state left, after each change.

Example::

    status = LaneStatus("crun", RetryPolicy(), on_change=lambda left: None)
    status.cool(now=0.0, wait=1.5, said="429")
    assert status.state is COOLING and status.holds(now=1.0, probe=False)
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ._exceptions import MaintenanceError, OverloadedError, PersonaError, RateLimitError
from ._retry import RetryPolicy
from ._stats import COOLING, PAUSED, RUNNING, STOPPED, LaneState

__all__ = ["LaneStatus"]

logger = logging.getLogger("persona_async")


class LaneStatus:
    """The lane's state, when it changes next, and what the provider said to change it."""

    __slots__ = (
        "_name",
        "_on_change",
        "_policy",
        "cooldown_until",
        "last_429",
        "last_455",
        "next_probe",
        "probe_interval",
        "probing",
        "state",
        "stop_error",
    )

    def __init__(
        self, name: str, policy: RetryPolicy, on_change: Callable[[LaneState], None]
    ) -> None:
        self._name = name  # the lane's, for the log
        self._policy = policy  # its backoff paces the probes of a paused lane
        self._on_change = on_change  # the lane's part of a change (jobs waiting, workers)
        self.state = RUNNING
        self.cooldown_until = 0.0  # cooling until then (the lane's clock)
        self.next_probe = 0.0  # paused: the next probe may go then
        self.probe_interval = 0.0  # paused: the wait between probes, doubled by each failure
        self.probing = False  # paused: a probe is out
        self.stop_error: PersonaError | None = None  # stopped: what every request gets
        self.last_455: MaintenanceError | None = None  # what the provider last said in a 455
        self.last_429: RateLimitError | OverloadedError | None = None  # and in a 429 or 503

    def holds(self, now: float, probe: bool) -> bool:
        """May a request not go now (the lane stopped, paused unless it is the probe, or
        cooling)?"""
        state = self.state
        return (
            self.stop_error is not None
            or (state is PAUSED and not probe)
            or (state is COOLING and now < self.cooldown_until)
        )

    def cooling(self, now: float) -> bool:
        return self.state is COOLING and now < self.cooldown_until

    def cool(self, now: float, wait: float, said: str) -> None:
        """The provider said ``said`` (429, 503): no start for ``wait`` seconds."""
        until = now + wait
        if until > self.cooldown_until:
            self.cooldown_until = until
        if self.state is RUNNING and wait > 0:
            self.set(COOLING, f"{said} from provider, cooling {wait:.2f}s")
        elif self.state is PAUSED and until > self.next_probe:
            self.next_probe = until  # a 429 to a probe: the next one waits its cooldown out

    def pause(self, now: float, probe: bool) -> None:
        """A 455: pause, or after a failed probe wait twice as long for the next."""
        if self.state is not PAUSED:
            self.probe_interval = max(self._policy.backoff_initial, 1e-3)
            self.next_probe = now + self.probe_interval
            self.set(PAUSED, "455 maintenance, probing")
        elif probe:
            self.probe_interval = min(self.probe_interval * 2, self._policy.backoff_max)
            self.next_probe = now + self.probe_interval

    def stop(self, err: PersonaError) -> bool:
        """Stop for good with ``err`` (401, 402); False if already stopped."""
        if self.stop_error is not None:
            return False
        self.stop_error = err
        self.set(STOPPED, f"{type(err).__name__}, nothing more is sent")
        return True

    def set(self, state: LaneState, why: str) -> None:
        """Change to ``state`` (logged once, with ``why``), unless already there."""
        left = self.state
        if state is left:
            return
        self.state = state
        logger.log(
            logging.WARNING if state is not RUNNING else logging.INFO,
            "lane %s %s: %s",
            self._name,
            state.value,
            why,
        )
        self._on_change(left)
