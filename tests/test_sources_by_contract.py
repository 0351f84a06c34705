"""wait_for_source on kie's market route, AceData, Evolink and the
Suno-API gateways (CometAPI, DeerAPI), each asking its own documented status endpoint.

End to end against the fake (which serves every contract's status in its documented shape) and
a loopback server that answers in the wrong shape; then the documented replies decoded, and
each contract's state table against its documented enum.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from _support import make
from aiohttp import web
from aiohttp.test_utils import TestServer

from persona_async import (
    AceDataProvider,
    AuthenticationError,
    CometApiProvider,
    DeerApiProvider,
    EvolinkProvider,
    InsufficientCreditsError,
    InvalidRequestError,
    KieJobsProvider,
    MalformedResponseError,
    MountSeaProvider,
    NotFoundError,
    PersonaClient,
    PersonaRequest,
    PollPolicy,
    Provider,
    RateLimitError,
    SourceFailedError,
    TtapiProvider,
)
from persona_async._providers._gateway import GATEWAY_STATES
from persona_async._providers._status import FAILURE_WORDS
from persona_async._providers.acedata import ACEDATA_STATES
from persona_async._providers.evolink import EVOLINK_STATES
from persona_async._providers.kie_jobs import KIE_JOBS_STATES
from persona_async._providers.mountsea import MOUNTSEA_STATES
from persona_async._providers.ttapi import TTAPI_STATES
from persona_async._sources import SourceState, read_status
from persona_async._transport import RawResponse
from persona_async.testing import FakeProvider

pytestmark = pytest.mark.anyio

# At most 3 status queries per second per task (kie's rule; the fake counts breaches).
QUICK = PollPolicy(initial=0.35, factor=1.2, max_interval=0.5, min_interval=0.35, jitter=0.0)
NEW = [
    KieJobsProvider,
    AceDataProvider,
    EvolinkProvider,
    CometApiProvider,
    TtapiProvider,
    MountSeaProvider,
]
#: The providers whose status reply lists the task's clips (MountSea's documents none).
WITH_CLIPS = [p for p in NEW if p is not MountSeaProvider]
CREATE_PATH = {
    KieJobsProvider: "/api/v1/jobs/createTask",
    AceDataProvider: "/suno/persona",
    EvolinkProvider: "/v1/audios/generations",
    CometApiProvider: "/suno/persona/create",
    DeerApiProvider: "/suno/persona/create",
    TtapiProvider: "/suno/v1/persona",
    MountSeaProvider: "/suno/v2/persona",
}


def req(task: str = "task_1", audio: str = "clip_1") -> PersonaRequest:
    return PersonaRequest(task, audio, "Neon Siren", "Smoky late-night R&B")


def waiting(cls: type[Provider], fake: FakeProvider) -> Provider:
    return make(cls, fake, wait_for_source=10.0, poll=QUICK)


def creates(fake: FakeProvider, cls: type[Provider]) -> list[Any]:
    return [r for r in fake.requests if r.method == "POST" and r.path == CREATE_PATH[cls]]


@pytest.fixture
def quick_tasks(fake: FakeProvider) -> FakeProvider:
    fake.task_seconds = 0.0  # persona tasks (kie-jobs, Evolink) finish at once
    return fake


@pytest.mark.parametrize("cls", NEW)
async def test_a_song_that_finishes_in_a_second_is_waited_for_then_created_once(
    quick_tasks: FakeProvider, cls: type[Provider]
) -> None:
    fake = quick_tasks
    song = fake.songs.add("task_1", ready_in=1.0)
    async with PersonaClient([waiting(cls, fake)], deadline=10.0) as client:
        persona = await client.create_persona(req())
    assert persona.audio_id == "clip_1"
    sent = creates(fake, cls)
    assert len(sent) == 1  # status queries, not repeated creates
    assert sent[0].arrived >= song.added + song.ready_in
    assert fake.songs.queries(fake.requests, "task_1") >= 2
    assert fake.songs.too_fast == 0


@pytest.mark.parametrize("cls", NEW)
async def test_a_failed_song_is_source_failed_and_nothing_is_created(
    fake: FakeProvider, cls: type[Provider]
) -> None:
    fake.songs.add("task_1", ready_in=0.2, fails=True, error_message="sensitive lyrics")
    async with PersonaClient([waiting(cls, fake)]) as client:
        with pytest.raises(SourceFailedError) as info:
            await client.create_persona(req())
    assert info.value.retryable is False
    assert (info.value.task_id, info.value.audio_id) == ("task_1", "clip_1")
    assert "sensitive lyrics" in info.value.message
    if cls is KieJobsProvider:  # the only one of these whose failure code is a number
        assert info.value.code == 501
    assert creates(fake, cls) == []


@pytest.mark.parametrize("cls", [*WITH_CLIPS, DeerApiProvider])
async def test_an_audio_id_not_among_the_clips_fails_before_any_create(
    fake: FakeProvider, cls: type[Provider]
) -> None:
    fake.songs.add("task_1", clips={"clip_A": 100.0, "clip_B": 100.0})
    async with PersonaClient([waiting(cls, fake)]) as client:
        with pytest.raises(InvalidRequestError) as info:
            await client.create_persona(req(audio="clip_Z"))
    assert info.value.field == "audio_id"
    assert "clip_A" in info.value.message
    assert creates(fake, cls) == []
    assert fake.songs.queries(fake.requests, "task_1") == 1


@pytest.mark.parametrize("cls", [KieJobsProvider, EvolinkProvider])
async def test_a_persona_task_on_the_shared_status_path_is_still_polled_as_one(
    fake: FakeProvider, cls: type[Provider]
) -> None:
    # kie's recordInfo and Evolink's /v1/tasks serve songs and persona tasks alike: the fake
    # routes by task id, and the SDK reads each reply as what it asked about.
    fake.songs.add("task_1")
    fake.task_seconds = 0.3
    async with PersonaClient([waiting(cls, fake)], deadline=10.0) as client:
        persona = await client.create_persona(req())
    assert persona.persona_id.startswith("persona_")
    assert len(creates(fake, cls)) == 1


@pytest.mark.parametrize("cls", [*NEW, DeerApiProvider])
async def test_a_status_reply_of_the_wrong_shape_is_malformed_and_nothing_is_created(
    cls: type[Provider],
) -> None:
    seen: list[tuple[str, str]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append((request.method, request.path))
        return web.json_response({"unexpected": [1, 2, 3]})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    async with TestServer(app, host="127.0.0.1") as server:
        base = str(server.make_url("")).rstrip("/")
        provider = cls(api_key="k", base_url=base, rate_limit=None, wait_for_source=5.0, poll=QUICK)
        async with PersonaClient([provider]) as client:
            with pytest.raises(MalformedResponseError):
                await client.create_persona(req())
    assert seen  # the status endpoint was asked...
    assert ("POST", CREATE_PATH[cls]) not in seen  # ...and no create was sent


async def test_mountsea_lists_no_clips_so_the_audio_id_is_left_to_its_create(
    fake: FakeProvider,
) -> None:
    fake.songs.add("task_1", clips={"clip_A": 100.0})
    async with PersonaClient([waiting(MountSeaProvider, fake)]) as client:
        persona = await client.create_persona(req(audio="clip_Z"))
    assert persona.audio_id == "clip_Z"
    assert len(creates(fake, MountSeaProvider)) == 1


# -- the documented replies, decoded -----------------------------------------------------------


def raw(body: object, status: int = 200, retry_after: str | None = None) -> RawResponse:
    text = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    return RawResponse(status, text, headers)


def decode(provider: Provider, reply: RawResponse) -> Any:
    return read_status(provider, reply)


KIE = KieJobsProvider(api_key="unit-test-key")
ACE = AceDataProvider(api_key="unit-test-key")
EVO = EvolinkProvider(api_key="unit-test-key")
COMET = CometApiProvider(api_key="unit-test-key")
TT = TtapiProvider(api_key="unit-test-key")
MOUNT = MountSeaProvider(api_key="unit-test-key")

KIE_MUSIC_DATA = {
    "taskId": "task_12345678",
    "model": "suno",
    "state": "success",
    "param": '{"model":"…","callBackUrl":"…","input":{}}',
    "resultJson": json.dumps(
        {"data": [{"id": "a1", "audio_url": "https://x.invalid/a.mp3", "duration": 198.4}]}
    ),
    "failCode": "",
    "failMsg": "",
    "costTime": 15000,
}


def kie(**data: object) -> RawResponse:
    return raw({"code": 200, "msg": "success", "data": {**KIE_MUSIC_DATA, **data}})


def test_kie_jobs_reads_the_clips_inside_the_result_json_string() -> None:
    info = decode(KIE, kie())
    assert (info.state, dict(info.clips or {})) == (SourceState.READY, {"a1": 198.4})
    info = decode(KIE, kie(state="fail", resultJson="", failCode="501", failMsg="failed"))
    assert (info.state, info.code, info.message) == (SourceState.FAILED, 501, "failed")
    assert decode(KIE, kie(state="queuing", resultJson="")).state is SourceState.RUNNING
    with pytest.raises(MalformedResponseError):
        decode(KIE, kie(resultJson="{not json"))


def test_evolink_reads_both_documented_clip_shapes() -> None:
    clip = {"result_id": "r1", "title": "t", "duration": 120.5, "audio_url": "https://x.invalid"}
    for result_data in ([clip], {"songs": [clip]}):
        info = decode(EVO, raw({"id": "t", "status": "completed", "result_data": result_data}))
        assert (info.state, dict(info.clips or {})) == (SourceState.READY, {"r1": 120.5})
    failed = {"id": "t", "status": "failed", "error": {"code": "invalid_request", "message": "no"}}
    info = decode(EVO, raw(failed))
    assert (info.state, info.code, info.message) == (SourceState.FAILED, "invalid_request", "no")


def test_acedata_without_a_state_word_is_complete_once_its_response_is_filled() -> None:
    done = {
        "id": "t",
        "response": {"success": True, "task_id": "t", "data": [{"id": "a1", "duration": 90}]},
    }
    assert decode(ACE, raw(done)).state is SourceState.READY
    assert decode(ACE, raw({"id": "t", "response": {}})).state is SourceState.RUNNING
    info = decode(ACE, raw({"id": "t", "state": "processing", "response": {}}))
    assert (info.state, info.clips) == (SourceState.RUNNING, None)


def test_a_gateway_clip_duration_is_read_from_raw_sunos_metadata() -> None:
    reply = {
        "code": "success",
        "message": "",
        "data": {
            "task_id": "t",
            "action": "MUSIC",
            "status": "SUCCESS",
            "fail_reason": "",
            "progress": "100%",
            "data": [
                {"id": "a06015d0", "state": "succeeded", "title": "x", "mv": "chirp-v4"},
                {"id": "b2", "status": "complete", "metadata": {"duration": 150.2}},
            ],
        },
    }
    info = decode(COMET, raw(reply))
    assert (info.state, dict(info.clips or {})) == (
        SourceState.READY,
        {"a06015d0": None, "b2": 150.2},
    )


def test_ttapi_reads_music_ids_and_string_durations() -> None:
    reply = {
        "status": "SUCCESS",
        "message": "success",
        "jobId": "j",
        "data": {
            "jobId": "j",
            "action": "music",
            "progress": "100%",
            "mv": "chirp-v5",
            "quota": "6",
            "musics": [{"musicId": "m1", "title": "t", "duration": "211.44"}],
        },
    }
    info = decode(TT, raw(reply))
    assert (info.state, dict(info.clips or {})) == (SourceState.READY, {"m1": 211.44})
    failed = decode(TT, raw({"status": "FAILED", "message": "moderated", "data": None}))
    assert (failed.state, failed.message) == (SourceState.FAILED, "moderated")


def test_mountsea_timeout_is_a_failure_and_stream_is_still_running() -> None:
    task = {"taskId": "t", "status": "timeout", "failCode": "E1", "failReason": "took too long"}
    info = decode(MOUNT, raw(task))
    assert (info.state, info.code, info.message) == (SourceState.FAILED, "E1", "took too long")
    assert decode(MOUNT, raw({**task, "status": "stream"})).state is SourceState.RUNNING


@pytest.mark.parametrize(
    ("provider", "reply", "error"),
    [
        (KIE, raw({"code": 401, "msg": "unauthorized"}), AuthenticationError),
        (
            KIE,
            raw({"code": 200, "msg": "success", "data": {"no": "state"}}),
            MalformedResponseError,
        ),
        (ACE, raw({"error": {"code": "used_up", "message": "x"}}, 403), InsufficientCreditsError),
        (ACE, raw({"error": {"code": "too_many_requests", "message": "x"}}, 429), RateLimitError),
        (EVO, raw({"error": {"code": "not_found", "message": "x"}}, 404), NotFoundError),
        (EVO, raw({"id": "t", "progress": 0}), MalformedResponseError),
        (COMET, raw({"code": "error", "message": "task_not_exist"}, 404), NotFoundError),
        (COMET, raw({"code": "success", "data": {"status": 3}}), MalformedResponseError),
        (COMET, raw(b"<html>502</html>", 502), MalformedResponseError),
        (TT, raw({"status": "FAILED", "message": "bad key"}, 401), AuthenticationError),
        (TT, raw({"message": "no status"}), MalformedResponseError),
        (MOUNT, raw({"message": "not found"}, 404), NotFoundError),
        (MOUNT, raw({"taskId": "t"}), MalformedResponseError),
    ],
)
def test_status_error_replies_are_typed(
    provider: Provider, reply: RawResponse, error: type[Exception]
) -> None:
    with pytest.raises(error):
        decode(provider, reply)


@pytest.mark.parametrize(
    ("table", "documented", "ready"),
    [
        (KIE_JOBS_STATES, ["waiting", "queuing", "generating", "success", "fail"], "success"),
        (ACEDATA_STATES, ["pending", "processing", "complete", "failed"], "complete"),
        (EVOLINK_STATES, ["pending", "processing", "completed", "failed"], "completed"),
        (TTAPI_STATES, ["PENDING_QUEUE", "ON_QUEUE", "SUCCESS", "FAILED"], "SUCCESS"),
        (
            MOUNTSEA_STATES,
            ["queued", "awaiting", "ready", "running", "stream", "success", "failed", "timeout"],
            "success",
        ),
        (
            GATEWAY_STATES,
            ["NOT_START", "SUBMITTED", "QUEUED", "IN_PROGRESS", "SUCCESS", "FAILURE"],
            "SUCCESS",
        ),
    ],
)
def test_each_state_table_covers_its_documented_enum(
    table: Any, documented: list[str], ready: str
) -> None:
    # Without regard to case, and with the failure words every contract shares.
    assert sorted(table) == sorted({w.casefold() for w in documented} | set(FAILURE_WORDS))
    assert [w for w, s in table.items() if s is SourceState.READY] == [ready.casefold()]
    assert all(s is not SourceState.UNKNOWN for s in table.values())
