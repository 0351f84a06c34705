"""The fake's music tasks and both contracts' status endpoints.

``FakeProvider.songs`` holds songs that finish after a configurable time, fail, or have given
clips and durations. The status endpoints answer for them:

* crun: ``GET /api/v1/client/job/TaskInfo?task_id=`` (``data.status`` pending/running/success/
  failed, clips at ``data.result.suno_data[]`` as ``{"suno_id", "duration"}``: crun does not
  document the item, so this is the shape the SDK assumes);
* the family: ``GET /api/v1/generate/record-info?taskId=`` (the documented shape: ``param`` a JSON
  string, clips at ``data.response.sunoData[]``, status PENDING/TEXT_SUCCESS/FIRST_SUCCESS/SUCCESS
  or GENERATE_AUDIO_FAILED with ``errorCode``/``errorMessage``);
* kie's market route, AceData, Evolink, the gateways, TTAPI, MountSea: see ``status_more``.

A create for a known song is judged against it: not finished, unknown clip or a vocal window
past the clip's end is a 422, as the providers answer.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qs

from . import status_more as more
from ._contract import _Contract
from ._wire import _MESSAGES, RequestRecord, _encode, _envelope, _Outcome, _retry_after_headers

CRUN_STATUS_PATH: Final = "/api/v1/client/job/TaskInfo"
FAMILY_STATUS_PATH: Final = "/api/v1/generate/record-info"
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
            found = _route_of(record.method, record.path, _query(record), record.json)
            count += found is not None and (task_id is None or found[1] == task_id)
        return count

    # -- the endpoints --------------------------------------------------------------------

    def answer(self, record: RequestRecord, keys: tuple[str, ...]) -> _Outcome | None:
        """The reply to a status query, or None when ``record`` is not one."""
        found = _route_of(record.method, record.path, _query(record), record.json)
        if found is None:
            return None
        route, task_id = found
        if record.api_key not in keys:
            return route.fail(401, _MESSAGES[401])
        self._count(task_id, record.arrived)
        if self._throttle:
            self._throttle -= 1
            status, code, body, _ = route.fail(429, _MESSAGES[429])
            return status, code, body, _retry_after_headers(self._throttle_retry_after)
        song = self.songs.get(task_id)
        if song is None:
            return route.fail(404, "task not found")
        return 200, 200, route.reply(song, song.phase(time.monotonic())), None

    def claims(self, method: str, path: str, query: Mapping[str, str]) -> bool:
        """Whether a request is a status query for one of these songs (on a path an async
        contract shares with its persona tasks, the task id decides)."""
        found = _route_of(method, path, query, None)
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


# -- routes: where each contract asks, and how it answers --------------------------------------


@dataclass(frozen=True, slots=True)
class _Route:
    method: str
    #: The task id a request on this route asks about (path, query, JSON body), or None.
    task_of: Callable[[str, Mapping[str, str], Any], str | None]
    #: The 200 body for a song at a phase.
    reply: Callable[[Song, float], bytes]
    #: (HTTP status, body) of an error reply with this code and message.
    error: Callable[[int, str], tuple[int, bytes]]

    def fail(self, code: int, message: str) -> _Outcome:
        status, body = self.error(code, message)
        return status, code, body, None


def _param(path: str, name: str) -> Callable[[str, Mapping[str, str], Any], str | None]:
    return lambda p, q, j: q.get(name, "") if p == path else None


def _tail(prefix: str) -> Callable[[str, Mapping[str, str], Any], str | None]:
    return lambda p, q, j: p[len(prefix) :] if p.startswith(prefix) else None


def _acedata_task(path: str, query: Mapping[str, str], body: Any) -> str | None:
    if path != more.ACEDATA_SONG_PATH:
        return None
    asked = body.get("id") if isinstance(body, dict) and body.get("action") == "retrieve" else None
    return asked if isinstance(asked, str) else ""


def _envelope_error(key: str) -> Callable[[int, str], tuple[int, bytes]]:
    return lambda code, message: ((429 if code == 429 else 200), _envelope(key, code, message))


_ROUTES: Final = (
    _Route(
        "GET",
        _param(CRUN_STATUS_PATH, "task_id"),
        lambda song, phase: _envelope("message", 200, "success", _crun_task(song, phase)),
        _envelope_error("message"),
    ),
    _Route(
        "GET",
        _param(FAMILY_STATUS_PATH, "taskId"),
        lambda song, phase: _envelope("msg", 200, "success", _family_task(song, phase)),
        _envelope_error("msg"),
    ),
    _Route(
        "GET", _param(more.KIE_JOBS_SONG_PATH, "taskId"), more.kie_jobs_song, more.kie_jobs_error
    ),
    _Route("POST", _acedata_task, more.acedata_song, more.acedata_error),
    _Route("GET", _tail(more.EVOLINK_SONG_PREFIX), more.evolink_song, more.evolink_error),
    _Route("GET", _tail(more.GATEWAY_SONG_PREFIX), more.gateway_song, more.gateway_error),
    _Route("GET", _param(more.TTAPI_SONG_PATH, "jobId"), more.ttapi_song, more.ttapi_error),
    _Route(
        "GET", _param(more.MOUNTSEA_SONG_PATH, "taskId"), more.mountsea_song, more.mountsea_error
    ),
)


def _query(record: RequestRecord) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(record.query_string).items()}


def _route_of(
    method: str, path: str, query: Mapping[str, str], body: Any
) -> tuple[_Route, str] | None:
    for route in _ROUTES:
        if route.method == method:
            task_id = route.task_of(path, query, body)
            if task_id is not None:
                return route, task_id
    return None
