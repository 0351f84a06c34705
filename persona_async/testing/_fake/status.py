"""The fake's music tasks and both contracts' status endpoints.

``FakeProvider.songs`` holds songs that finish after a configurable time, fail, or have given
clips and durations. The status endpoints answer for them:

* crun: ``GET /api/v1/client/job/TaskInfo?task_id=`` (``data.status`` pending/running/success/
  failed, clips at ``data.result.suno_data[]`` as ``{"suno_id", "duration"}``: crun does not
  document the item, so this is the shape the SDK assumes);
* the family: ``GET /api/v1/generate/record-info?taskId=`` (the documented shape: ``param`` a JSON
  string, clips at ``data.response.sunoData[]``, status PENDING/TEXT_SUCCESS/FIRST_SUCCESS/SUCCESS
  or GENERATE_AUDIO_FAILED with ``errorCode``/``errorMessage``).

A create for a known song is judged against it: not finished, unknown clip or a vocal window
past the clip's end is a 422, as the providers answer.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qs

from ._contract import _Contract
from ._wire import _MESSAGES, RequestRecord, _encode, _envelope, _Outcome, _retry_after_headers

CRUN_STATUS_PATH: Final = "/api/v1/client/job/TaskInfo"
FAMILY_STATUS_PATH: Final = "/api/v1/generate/record-info"
# path -> (contract kind, query parameter naming the task, envelope message key)
_ROUTES: Final = {
    CRUN_STATUS_PATH: ("crun", "task_id", "message"),
    FAMILY_STATUS_PATH: ("family", "taskId", "msg"),
}
#: kie and apikley allow at most this many status queries per second per task.
MAX_QUERIES_PER_SECOND: Final = 3


@dataclass(slots=True)
class Song:
    """One music task. It runs for ``ready_in`` seconds from when it was added, then succeeds
    (or fails, when ``fails``). ``clips`` maps clip id -> duration in seconds."""

    task_id: str
    clips: dict[str, float]
    ready_in: float
    fails: bool
    error_code: int
    error_message: str
    #: crun's status word while running (to try words the SDK does not know).
    running_word: str
    added: float = field(default_factory=time.monotonic)

    def phase(self, now: float) -> float:
        """Fraction of the generation done (1.0 when finished)."""
        if self.ready_in <= 0:
            return 1.0
        return min(1.0, (now - self.added) / self.ready_in)


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
            route = _ROUTES.get(record.path)
            if route is None:
                continue
            asked = parse_qs(record.query_string).get(route[1], [""])[0]
            count += task_id is None or asked == task_id
        return count

    # -- the endpoints --------------------------------------------------------------------

    def answer(self, record: RequestRecord, keys: tuple[str, ...]) -> _Outcome | None:
        """The reply to a status query, or None when ``record`` is not one."""
        route = _ROUTES.get(record.path)
        if route is None or record.method != "GET":
            return None
        kind, param, key = route
        if record.api_key not in keys:
            return 200, 401, _envelope(key, 401, _MESSAGES[401]), None
        task_id = parse_qs(record.query_string).get(param, [""])[0]
        self._count(task_id, record.arrived)
        if self._throttle:
            self._throttle -= 1
            headers = _retry_after_headers(self._throttle_retry_after)
            return 429, 429, _envelope(key, 429, _MESSAGES[429]), headers
        song = self.songs.get(task_id)
        if song is None:
            return 200, 404, _envelope(key, 404, "task not found"), None
        phase = song.phase(time.monotonic())
        data = _crun_task(song, phase) if kind == "crun" else _family_task(song, phase)
        return 200, 200, _envelope(key, 200, "success", data), None

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


def _crun_task(song: Song, phase: float) -> dict[str, Any]:
    result: dict[str, Any] | None = None
    if phase < 1.0:
        status = "pending" if phase < 0.3 else song.running_word
    elif song.fails:
        status = "failed"
        result = {"code": song.error_code, "message": song.error_message}
    else:
        status = "success"
        clips = [{"suno_id": cid, "duration": d} for cid, d in song.clips.items()]
        result = {"code": 200, "message": "success", "media_urls": [], "suno_data": clips}
    return {
        "task_id": song.task_id,
        "provider": "Suno",
        "model_version": "sunov5",
        "status": status,
        "param": {"model": "suno/music-generate", "callback_url": None, "input": {}},
        "create_at": 1768900378,
        "result": result,
        "duration_s": None,
        "complete_at": None,
        "source": "api",
    }


def _family_task(song: Song, phase: float) -> dict[str, Any]:
    clips = [
        {"id": cid, "audioUrl": f"https://example.invalid/{cid}.mp3", "duration": d}
        for cid, d in song.clips.items()
    ]
    error_code, error_message = None, None
    shown: list[dict[str, Any]]
    if phase < 0.3:
        status, shown = "PENDING", []
    elif phase < 0.6:
        status, shown = "TEXT_SUCCESS", []
    elif phase < 1.0:
        status, shown = "FIRST_SUCCESS", clips[:1]
    elif song.fails:
        status, shown = "GENERATE_AUDIO_FAILED", []
        error_code, error_message = song.error_code, song.error_message
    else:
        status, shown = "SUCCESS", clips
    response: dict[str, Any] = {"taskId": song.task_id, "sunoData": shown}
    return {
        "taskId": song.task_id,
        "parentMusicId": "",
        # The family sends param as a JSON *string*.
        "param": _encode({"prompt": "", "customMode": True, "model": "V4_5ALL"}).decode(),
        "response": response,
        "status": status,
        "type": "GENERATE",
        "errorCode": error_code,
        "errorMessage": error_message,
    }
