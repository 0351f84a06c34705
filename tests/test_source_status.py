"""Status replies as the providers document them, decoded; the tables that map them, complete.

The replies here are the documented examples (crun's TaskInfo page,
docs.crun.ai/suno-api/suno-task-info; the family's record-info page,
docs.sunoapi.org/suno-api/get-music-generation-details), byte for byte where the docs give one,
so a decoder that drifts from the contract fails here first.
"""

from __future__ import annotations

import json

import pytest

from persona_async import (
    AuthenticationError,
    CrunProvider,
    KieProvider,
    MalformedResponseError,
    RateLimitError,
    SourceNotReadyError,
    ValidationError,
)
from persona_async._decoding import interpret
from persona_async._exceptions import SOURCE_NOT_READY_WORDINGS, source_not_ready
from persona_async._providers._family import FAMILY_STATES
from persona_async._providers._status import FAILURE_WORDS
from persona_async._providers.crun import CRUN_STATES
from persona_async._sources import SourceState, read_status
from persona_async._transport import RawResponse

FAMILY = KieProvider(api_key="k")
CRUN = CrunProvider(api_key="k")


def raw(body: object, status: int = 200, retry_after: str | None = None) -> RawResponse:
    text = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    return RawResponse(status, text, headers)


FAMILY_SUCCESS = {
    "code": 200,
    "msg": "success",
    "data": {
        "taskId": "5c79****be8e",
        "parentMusicId": "",
        "param": '{"prompt":"...","style":"Classical","customMode":true,"model":"V4_5ALL"}',
        "response": {
            "taskId": "5c79****be8e",
            "sunoData": [
                {
                    "id": "8551****662c",
                    "audioUrl": "https://example.invalid/a.mp3",
                    "sourceStreamAudioUrl": "https://example.invalid/s",
                    "title": "...",
                    "createTime": 1735689600000,
                    "duration": 198.44,
                }
            ],
        },
        "status": "SUCCESS",
        "type": "GENERATE",
        "errorCode": None,
        "errorMessage": None,
    },
}

FAMILY_FAILED = {
    "code": 200,
    "msg": "success",
    "data": {
        "taskId": "t",
        "param": "{}",
        "response": {"taskId": "t", "sunoData": [], "errorMessage": "生成失败,请重试或联系客服"},
        "status": "GENERATE_AUDIO_FAILED",
        "errorCode": 501,
        "errorMessage": "生成失败,请重试或联系客服",
    },
}

CRUN_RUNNING = {
    "code": 200,
    "message": "success",
    "data": {
        "task_id": "d6956973-2f17-43d4-8514-af6cc3a2f55d",
        "provider": "Suno",
        "model_version": "sunov5",
        "status": "running",
        "param": {
            "model": "suno/music-generate",
            "callback_url": None,
            "input": {"mode": "custom"},
        },
        "create_at": 1768900378,
        "result": None,
        "duration_s": None,
        "complete_at": None,
        "source": "api",
    },
}


def test_family_success_gives_its_clips_and_durations() -> None:
    info = read_status(FAMILY, raw(FAMILY_SUCCESS))
    assert info.state is SourceState.READY
    assert info.clips == {"8551****662c": 198.44}


def test_family_failure_carries_the_providers_code_and_message() -> None:
    info = read_status(FAMILY, raw(FAMILY_FAILED))
    assert info.state is SourceState.FAILED
    assert (info.code, info.message) == (501, "生成失败,请重试或联系客服")


def test_first_success_is_still_running() -> None:
    body = json.loads(json.dumps(FAMILY_SUCCESS))
    body["data"]["status"] = "FIRST_SUCCESS"
    info = read_status(FAMILY, raw(body))
    assert info.state is SourceState.RUNNING


def test_crun_running_example_is_running_and_an_unknown_word_is_unknown() -> None:
    info = read_status(CRUN, raw(CRUN_RUNNING))
    assert (info.state, info.clips) == (SourceState.RUNNING, None)
    body = json.loads(json.dumps(CRUN_RUNNING))
    body["data"]["status"] = "queued"
    info = read_status(CRUN, raw(body))
    assert info.state is SourceState.UNKNOWN


def test_crun_success_reads_clip_ids_under_any_of_the_assumed_keys() -> None:
    body = json.loads(json.dumps(CRUN_RUNNING))
    body["data"]["status"] = "success"
    body["data"]["result"] = {
        "media_urls": ["https://example.invalid/a.mp3"],
        "suno_data": [{"suno_id": "a", "duration": 120.5}, {"id": "b"}, {"title": "no id"}],
    }
    info = read_status(CRUN, raw(body))
    assert info.state is SourceState.READY
    assert info.clips == {"a": 120.5, "b": None}


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (raw({"code": 401, "msg": "unauthorized"}), AuthenticationError),
        (raw({"code": 429, "msg": "too fast"}, retry_after="3"), RateLimitError),
        (raw(b"<html>502</html>", status=502), MalformedResponseError),
        (raw(b"rate limited", status=429, retry_after="2"), RateLimitError),
        (raw({"code": 200, "msg": "success", "data": {"no": "status"}}), MalformedResponseError),
    ],
)
def test_status_error_replies_are_typed(reply: RawResponse, error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        read_status(FAMILY, reply)
    if isinstance(info.value, RateLimitError):
        assert info.value.retry_after is not None


def test_a_gateway_page_on_a_status_query_is_a_missed_poll_not_the_end() -> None:
    with pytest.raises(MalformedResponseError) as info:
        read_status(CRUN, raw(b"<html>502</html>", status=502))
    assert info.value.retryable is True


def test_the_family_state_table_covers_its_documented_enum() -> None:
    documented = [
        "PENDING",
        "TEXT_SUCCESS",
        "FIRST_SUCCESS",
        "SUCCESS",
        "CREATE_TASK_FAILED",
        "GENERATE_AUDIO_FAILED",
        "CALLBACK_EXCEPTION",
        "SENSITIVE_WORD_ERROR",
    ]
    assert sorted(FAMILY_STATES) == sorted({w.casefold() for w in documented} | set(FAILURE_WORDS))
    assert [s for s, state in FAMILY_STATES.items() if state is SourceState.READY] == ["success"]


def test_the_crun_state_table_covers_the_known_words() -> None:
    assert dict(CRUN_STATES) == {
        "error": SourceState.FAILED,
        "fail": SourceState.FAILED,
        "pending": SourceState.RUNNING,
        "running": SourceState.RUNNING,
        "success": SourceState.READY,
        "failed": SourceState.FAILED,
    }


# Every "not finished" wording found in the contracts, and phrases that must not match.
NOT_READY = [
    "If the music is still generating, this endpoint will return a failure",
    "Please ensure the music generation task is fully completed",
    "record status is not success",
    "music task not complete",
]
NOT_NOT_READY = [
    "task_id not found",
    "validation error",
    "vocalEnd must be >= 0",
    "name is required",
]


@pytest.mark.parametrize("message", NOT_READY)
def test_every_not_ready_wording_is_in_the_table(message: str) -> None:
    assert source_not_ready(message)


@pytest.mark.parametrize("message", NOT_NOT_READY)
def test_other_422_messages_are_not_not_ready(message: str) -> None:
    assert not source_not_ready(message)


def test_every_wording_in_the_table_is_used_by_a_known_message() -> None:
    for wording in SOURCE_NOT_READY_WORDINGS:
        assert any(wording in m.lower() for m in NOT_READY), wording


@pytest.mark.parametrize("message", NOT_READY)
def test_a_not_ready_422_on_create_is_a_retryable_source_not_ready(message: str) -> None:
    reply = raw({"code": 422, "msg": message, "data": None})
    with pytest.raises(SourceNotReadyError) as info:
        interpret(FAMILY, reply)
    assert isinstance(info.value, ValidationError)
    assert info.value.retryable is True
    assert info.value.code == 422
