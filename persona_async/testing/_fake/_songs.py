"""The fake's music tasks (source songs), answered on every contract's status endpoint.

``FakeProvider.songs`` holds songs that finish after a configurable time, fail, or have given
clips and durations; each contract's module says how its status endpoint renders one. A create
for a known song is judged against it: not finished, unknown clip or a vocal window past the
clip's end is a 422, as the providers answer.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import parse_qs

from ._contract import _Contract, find_status
from ._registry import CONTRACTS
from ._song import Song
from ._wire import _MESSAGES, RequestRecord, _envelope, _Outcome, _retry_after_headers

#: kie and apikley allow at most this many status queries per second per task.
MAX_QUERIES_PER_SECOND: Final = 3


class Songs:
    """The fake's music tasks, and what its status endpoints were asked.

    Example::

        fake.songs.add("task_1", clips={"clip_1": 95.0}, ready_in=2.0)
        fake.songs.add("task_2", fails=True)
        fake.songs.throttle(2, retry_after=0.5)   # the next two status queries get 429
    """

    __slots__ = ("_queries", "_throttle", "_throttle_retry_after", "songs", "too_fast")

    def __init__(self) -> None:
        self.songs: dict[str, Song] = {}
        #: Status queries for one task beyond MAX_QUERIES_PER_SECOND in a one-second window.
        self.too_fast = 0
        self._queries: dict[str, collections.deque[float]] = {}  # task id -> recent query times
        self._throttle = 0
        self._throttle_retry_after: float | None = None

    def add(
        self,
        task_id: str,
        *,
        clips: Mapping[str, float] | None = None,
        ready_in: float = 0.0,
        fails: bool = False,
        error_code: int = 501,
        error_message: str = "generation failed, please retry",
        running_word: str = "running",
    ) -> Song:
        """Add a song; by default one clip ``clip_1`` of 120 s, finished at once."""
        song = Song(
            task_id,
            dict(clips if clips is not None else {"clip_1": 120.0}),
            ready_in,
            fails,
            error_code,
            error_message,
            running_word,
        )
        self.songs[task_id] = song
        return song

    def throttle(self, times: int, retry_after: float | None = None) -> None:
        """Answer the next ``times`` status queries with 429 (and this Retry-After)."""
        self._throttle = times
        self._throttle_retry_after = retry_after

    def queries(self, records: list[RequestRecord], task_id: str | None = None) -> int:
        """Status queries among ``records`` (``fake.requests``), for one task if given."""
        count = 0
        for record in records:
            found = find_status(CONTRACTS, record.method, record.path, _query(record), record.json)
            count += found is not None and (task_id is None or found[1] == task_id)
        return count

    # -- the endpoints --------------------------------------------------------------------

    def answer(self, record: RequestRecord, keys: tuple[str, ...]) -> _Outcome | None:
        """The reply to a status query, or None when ``record`` is not one."""
        found = find_status(CONTRACTS, record.method, record.path, _query(record), record.json)
        if found is None:
            return None
        contract, task_id = found
        status = contract.status
        assert status is not None
        if record.api_key not in keys:
            return status.fail(401, _MESSAGES[401])
        self._count(task_id, record.arrived)
        if self._throttle:
            self._throttle -= 1
            http, reply = status.error(429, _MESSAGES[429])
            return http, 429, reply, _retry_after_headers(self._throttle_retry_after)
        song = self.songs.get(task_id)
        if song is None:
            return status.fail(404, "task not found")
        return 200, 200, status.song(song, song.phase(time.monotonic())), None

    def claims(self, method: str, path: str, query: Mapping[str, str]) -> bool:
        """Whether a request is a status query for one of these songs (on a path an async
        contract shares with its persona tasks, the task id decides)."""
        found = find_status(CONTRACTS, method, path, query, None)
        return found is not None and found[1] in self.songs

    def _count(self, task_id: str, now: float) -> None:
        recent = self._queries.setdefault(task_id, collections.deque())
        while recent and recent[0] <= now - 1.0:
            recent.popleft()
        recent.append(now)
        if len(recent) > MAX_QUERIES_PER_SECOND:
            self.too_fast += 1

    def refuse_create(self, contract: _Contract, body: Mapping[str, Any]) -> _Outcome | None:
        """The 422 a create for a known song gets when the song cannot be used, else None."""
        if contract.task is None:  # a contract that names no source task
            return None
        song = self.songs.get(body[contract.task])
        if song is None:
            return None
        key = contract.message_key
        if song.fails or song.phase(time.monotonic()) < 1.0:
            return 200, 422, _envelope(key, 422, contract.missing_task_message), None
        duration = song.clips.get(body[contract.audio])
        if duration is None:
            return 200, 422, _envelope(key, 422, f"{contract.audio} not found in this task"), None
        end = body.get(contract.vocal_end) if contract.vocal_end else None
        if isinstance(end, int | float) and end > duration:
            message = f"{contract.vocal_end} must be between 0 and the audio duration"
            return 200, 422, _envelope(key, 422, message), None
        return None


def _query(record: RequestRecord) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(record.query_string).items()}
