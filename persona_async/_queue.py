"""Where a lane's idle workers wait: FIFO, each woken by a job's arrival or its own timer."""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["WorkerPark"]


class WorkerPark:
    """Workers with nothing to do now wait here, first come first woken.

    Example::

        park = WorkerPark()
        await park.wait(0.5)     # a worker: until woken, or at most 0.5 s
        park.wake_one()          # a job arrived: one worker takes it
    """

    __slots__ = ("idle",)

    def __init__(self) -> None:
        self.idle: deque[asyncio.Future[None]] = deque()  # parked workers, FIFO (maybe done)

    async def wait(self, wake_in: float | None) -> None:
        """Wait until woken, or ``wake_in`` seconds (None: no limit)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self.idle.append(waiter)
        timer = loop.call_later(wake_in, _resolve, waiter) if wake_in is not None else None
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
            if waiter in self.idle:  # timed out or cancelled while parked: leave the line
                self.idle.remove(waiter)

    def wake_one(self) -> bool:
        """Wake one parked worker; False if none was parked."""
        while self.idle:
            waiter = self.idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return True
        return False

    def wake_all(self) -> None:
        idle, self.idle = self.idle, deque()
        for waiter in idle:
            _resolve(waiter)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
