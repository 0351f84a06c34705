"""The synchronous hosts beyond the seeds: AceData, the Suno-API gateways (CometAPI, DeerAPI),
TTAPI and MountSea. Per provider: the body and headers the provider sees, the persona read back,
every documented error as the provider sends it, auth, and replies of the wrong shape."""

from __future__ import annotations

from typing import Any

import pytest
from _support import make

from persona_async import (
    AceDataProvider,
    AuthenticationError,
    CometApiProvider,
    DeerApiProvider,
    FeatureDisabledError,
    GenerationFailedError,
    InsufficientCreditsError,
    InvalidRequestError,
    MalformedResponseError,
    MountSeaProvider,
    NotFoundError,
    OutcomeUnknownError,
    OverloadedError,
    Persona,
    PersonaClient,
    PersonaError,
    PersonaRequest,
    Provider,
    ProviderTimeoutError,
    RateLimitError,
    ServerError,
    TtapiProvider,
    ValidationError,
)
from persona_async._providers import PROVIDER_KINDS
from persona_async.testing import FakeProvider, Fault

pytestmark = pytest.mark.anyio

FULL = PersonaRequest(
    "task_1", "clip_1", "Neon Siren", "Smoky", vocal_start=12.5, vocal_end=40, style="jazz"
)
MINIMAL = PersonaRequest("task_1", "clip_1", "Neon Siren", "Smoky")
GATEWAYS = [CometApiProvider, DeerApiProvider]
ALL = [AceDataProvider, *GATEWAYS, TtapiProvider, MountSeaProvider]


async def create(provider: Provider, req: PersonaRequest = MINIMAL) -> Persona:
    async with PersonaClient([provider], backoff_initial=0.01, backoff_max=0.05) as c:
        return await c.create_persona(req)


async def fail(provider: Provider, req: PersonaRequest = MINIMAL, **kw: Any) -> PersonaError:
    settings: dict[str, Any] = {"max_retries": 0, "deadline": 5.0, "backoff_initial": 0.01}
    async with PersonaClient([provider], **{**settings, **kw}) as c:
        with pytest.raises(PersonaError) as info:
            await c.create_persona(req)
    return info.value


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


# -- the request, as each provider documents it ------------------------------------------------


async def test_acedata_body_names_the_clip_audio_id_and_sends_no_task(fake: FakeProvider) -> None:
    req = PersonaRequest("task_1", "clip_1", "Neon Siren", "Smoky", vocal_start=12.5, vocal_end=40)
    await create(make(AceDataProvider, fake), req)
    (record,) = fake.requests
    assert record.path == "/suno/persona"
    assert record.json == {
        "audio_id": "clip_1",
        "name": "Neon Siren",
        "description": "Smoky",
        "vocal_start": 12.5,
        "vocal_end": 40,
    }


@pytest.mark.parametrize("cls", GATEWAYS)
async def test_gateway_body_is_root_clip_and_clips_list_private_by_default(
    fake: FakeProvider, cls: type[Provider]
) -> None:
    await create(make(cls, fake))
    (record,) = fake.requests
    assert record.path == "/suno/persona/create"
    assert record.json == {
        "root_clip_id": "clip_1",
        "name": "Neon Siren",
        "description": "Smoky",
        "clips": ["clip_1"],
        "is_public": False,
    }


async def test_gateway_is_public_is_a_provider_keyword(fake: FakeProvider) -> None:
    await create(make(CometApiProvider, fake, is_public=True))
    assert fake.requests[0].json is not None
    assert fake.requests[0].json["is_public"] is True


#: FULL without the vocal window, which TTAPI and MountSea document only for a vox persona.
STYLED = PersonaRequest("task_1", "clip_1", "Neon Siren", "Smoky", style="jazz")


async def test_ttapi_body_uses_its_own_spellings(fake: FakeProvider) -> None:
    await create(make(TtapiProvider, fake), STYLED)
    (record,) = fake.requests
    assert record.path == "/suno/v1/persona"
    assert record.json == {
        "music_id": "clip_1",
        "name": "Neon Siren",
        "describe": "Smoky",
        "styles": "jazz",
    }


async def test_mountsea_body_is_clip_id_with_is_public(fake: FakeProvider) -> None:
    await create(make(MountSeaProvider, fake), STYLED)
    (record,) = fake.requests
    assert record.path == "/suno/v2/persona"
    assert record.json == {
        "clip_id": "clip_1",
        "name": "Neon Siren",
        "description": "Smoky",
        "is_public": False,
        "user_input_styles": "jazz",
    }


@pytest.mark.parametrize(
    ("cls", "field"),
    [
        (AceDataProvider, "style"),
        (CometApiProvider, "vocal_start"),
        (DeerApiProvider, "style"),
    ],
)
async def test_field_a_provider_cannot_send_is_refused_before_sending(
    fake: FakeProvider, cls: type[Provider], field: str
) -> None:
    req = PersonaRequest("task_1", "clip_1", "n", "d", **{field: "pop" if field == "style" else 1})
    err = await fail(make(cls, fake), req)
    assert isinstance(err, InvalidRequestError)
    assert err.field == field
    assert "not supported" in str(err)
    assert fake.requests == []


@pytest.mark.parametrize(
    ("cls", "header", "value"),
    [
        (AceDataProvider, "authorization", "Bearer test-key"),
        (CometApiProvider, "authorization", "Bearer test-key"),
        (DeerApiProvider, "authorization", "Bearer test-key"),
        (TtapiProvider, "tt-api-key", "test-key"),
        (MountSeaProvider, "authorization", "Bearer test-key"),
    ],
)
async def test_key_travels_only_in_the_providers_header(
    cls: type[Provider], header: str, value: str
) -> None:
    async with FakeProvider() as fake:
        provider = make(cls, fake)
        assert lower(provider.auth_headers()) == {header: value}
        await create(provider)
        (record,) = fake.requests
        assert record.api_key == "test-key"
        secret_headers = {"authorization", "x-api-key", "tt-api-key"} - {header}
        assert not secret_headers & set(lower(record.headers))
        assert "test-key" not in record.query_string


@pytest.mark.parametrize("cls", ALL)
async def test_wrong_key_is_an_authentication_error_and_stops_the_lane(cls: type[Provider]) -> None:
    async with FakeProvider() as fake:
        provider = cls(api_key="wrong", base_url=fake.url, rate_limit=None)
        err = await fail(provider)
        assert type(err) is AuthenticationError
        assert err.http_status == 401
        assert "wrong" not in str(err)
        assert "wrong" not in repr(err)


# -- the reply ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL)
async def test_persona_id_is_read_from_the_providers_reply(
    fake: FakeProvider, cls: type[Provider]
) -> None:
    persona = await create(make(cls, fake, name="acct"))
    (persona_id,) = fake.personas
    assert persona == Persona(persona_id, "acct", "task_1", "clip_1", "Neon Siren", "Smoky")


@pytest.mark.parametrize(
    ("cls", "raw", "status"),
    [
        (AceDataProvider, b'{"data":{"persona_id":"p_9"},"success":true}', 200),
        (
            AceDataProvider,
            b'{"success":true,"task_id":"8e80","data":{"persona_id":"p_9","extra":1}}',
            200,
        ),
        (
            CometApiProvider,
            b'{"id":"p_9","name":"n","description":"d","image_s3_id":"x","root_clip_id":"c",'
            b'"clip":{"id":"c","metadata":{"tags":"pop","duration":12.5},"status":"complete"},'
            b'"persona_clips":[{"clip":{"id":"c"}}],"user_handle":"h"}',
            200,
        ),
        (
            TtapiProvider,
            b'{"status":"SUCCESS","message":"success","data":{"persona_id":"p_9"}}',
            200,
        ),
        (
            MountSeaProvider,
            b'{"id":"p_9","name":"n","persona_type":"vox","is_public":false,'
            b'"clip":{"status":"complete"},"vocal_start_s":1,"vocal_end_s":20}',
            201,
        ),
    ],
    ids=["acedata-docs", "acedata-guide", "gateway-suno-object", "ttapi", "mountsea-201"],
)
async def test_documented_success_reply_is_read(
    fake: FakeProvider, cls: type[Provider], raw: bytes, status: int
) -> None:
    fake.inject(Fault.body(raw, status=status))
    persona = await create(make(cls, fake))
    assert persona.persona_id == "p_9"


@pytest.mark.parametrize(
    ("cls", "raw", "status"),
    [
        (AceDataProvider, b'{"success":true,"data":{}}', 200),
        (AceDataProvider, b'{"success":false}', 200),
        (AceDataProvider, b'{"success":true,"data":{"personaId":"p"}}', 200),
        (AceDataProvider, b'{"error":"used_up"}', 403),
        (CometApiProvider, b'{"name":"n","clip":{}}', 200),
        (CometApiProvider, b'{"id":7}', 200),
        (CometApiProvider, b'[{"id":"p"}]', 200),
        (DeerApiProvider, b'{"id":""}', 200),
        (TtapiProvider, b'{"status":"ON_QUEUE","message":"","data":{}}', 200),
        (TtapiProvider, b'{"status":"SUCCESS","data":{"personaId":"p"}}', 200),
        (TtapiProvider, b'{"code":200,"data":{"persona_id":"p"}}', 200),
        (MountSeaProvider, b'{"taskId":"t"}', 201),
        (MountSeaProvider, b'{"error":{"message":"x"},"id":"p"}', 200),
    ],
)
async def test_wrong_shaped_reply_is_malformed_with_an_excerpt(
    fake: FakeProvider, cls: type[Provider], raw: bytes, status: int
) -> None:
    fake.inject(Fault.body(raw, status=status), times=5)
    err = await fail(make(cls, fake, retry_ambiguous=True))
    assert type(err) is MalformedResponseError
    assert err.excerpt
    assert err.http_status == status


# -- every documented error, as the provider sends it ------------------------------------------

ACEDATA_ERRORS_DOC = [
    (400, "bad_request", ValidationError),
    (400, "no_token", AuthenticationError),
    (400, "api_not_implemented", FeatureDisabledError),
    (401, "invalid_token", AuthenticationError),
    (401, "token_expired", AuthenticationError),
    (401, "token_mismatched", AuthenticationError),
    (403, "disabled", AuthenticationError),
    (403, "used_up", InsufficientCreditsError),
    (403, "forbidden", ValidationError),
    (404, "no_api", NotFoundError),
    (429, "too_many_requests", RateLimitError),
    (500, "api_error", ServerError),
]


@pytest.mark.parametrize(
    ("status", "code", "cls"), ACEDATA_ERRORS_DOC, ids=[c for _, c, _ in ACEDATA_ERRORS_DOC]
)
async def test_every_acedata_error_code_raises_its_class(
    fake: FakeProvider, status: int, code: str, cls: type[PersonaError]
) -> None:
    raw = b'{"error":{"code":"%s","message":"said %s"},"trace_id":"t-1"}' % (
        code.encode(),
        code.encode(),
    )
    fake.inject(Fault.body(raw, status=status, content_type="application/json"), times=50)
    err = await fail(make(AceDataProvider, fake), deadline=0.5, retry_after_max=60.0)
    assert type(err) is cls
    assert err.http_status == status
    assert err.code == status
    assert err.message == f"{code}: said {code}"
    assert err.retryable is cls.default_retryable


async def test_acedata_timeout_504_may_have_made_the_persona_so_it_is_not_resent(
    fake: FakeProvider,
) -> None:
    raw = b'{"error":{"code":"timeout","message":"upstream timed out"},"trace_id":"t"}'
    fake.inject(Fault.body(raw, status=504), times=5)
    err = await fail(make(AceDataProvider, fake), max_retries=3)
    assert type(err) is OutcomeUnknownError
    assert len(fake.requests) == 1
    # What the provider said, kept on the cause: a gateway timeout that may have made it.
    cause = err.__cause__
    assert type(cause) is ProviderTimeoutError
    assert (cause.code, cause.http_status, cause.provider) == (504, 504, "acedata")
    assert cause.message == "timeout: upstream timed out"
    assert err.message.startswith("the request was sent and then lost (timeout: upstream timed out")


async def test_an_acedata_error_code_with_nothing_said_is_the_message(fake: FakeProvider) -> None:
    raw = b'{"error":{"code":"used_up","message":""},"trace_id":"t-1"}'
    fake.inject(Fault.body(raw, status=403, content_type="application/json"))
    err = await fail(make(AceDataProvider, fake))
    assert type(err) is InsufficientCreditsError
    assert (err.message, err.code) == ("used_up", 403)


TTAPI_ERRORS_DOC = [
    (400, ValidationError),
    (401, AuthenticationError),
    (402, InsufficientCreditsError),
    (403, AuthenticationError),
    (404, NotFoundError),
    (429, RateLimitError),
    (499, RateLimitError),
    (500, ServerError),
]


@pytest.mark.parametrize(("status", "cls"), TTAPI_ERRORS_DOC)
async def test_every_ttapi_status_raises_its_class(
    fake: FakeProvider, status: int, cls: type[PersonaError]
) -> None:
    raw = b'{"status":"FAILED","message":"said %d","data":null}' % status
    fake.inject(Fault.body(raw, status=status), times=50)
    err = await fail(make(TtapiProvider, fake), deadline=0.5)
    assert type(err) is cls
    assert (err.code, err.http_status, err.message) == (status, status, f"said {status}")


async def test_ttapi_failed_inside_http_200_is_a_generation_failure(fake: FakeProvider) -> None:
    fake.inject(Fault.body(b'{"status":"FAILED","message":"music_id not found","data":null}'))
    err = await fail(make(TtapiProvider, fake))
    assert type(err) is GenerationFailedError
    assert err.message == "FAILED: music_id not found"


async def test_ttapi_queue_exhausted_499_is_retried_later_not_failed(fake: FakeProvider) -> None:
    fake.inject(Fault.body(b'{"status":"FAILED","message":"queue full"}', status=499))
    # Retried as a 429 is: after the window (kept short here) has passed.
    persona = await create(make(TtapiProvider, fake, rate_period=0.2))
    assert persona.persona_id in fake.personas
    assert [r.http_status for r in fake.requests] == [499, 200]


async def test_ttapi_504_sync_timeout_is_outcome_unknown_not_resent(fake: FakeProvider) -> None:
    fake.inject(Fault.body(b'{"status":"FAILED","message":"timeout"}', status=504), times=5)
    err = await fail(make(TtapiProvider, fake), max_retries=3)
    assert type(err) is OutcomeUnknownError
    assert len(fake.requests) == 1


GATEWAY_ERRORS = [
    (400, b'{"error":{"message":"clip not found","type":"new_api_error"}}', ValidationError),
    (401, b'{"error":{"message":"invalid token","type":"new_api_error"}}', AuthenticationError),
    (402, b'{"error":"insufficient quota"}', InsufficientCreditsError),
    (404, b'{"message":"not found"}', NotFoundError),
    (429, b'{"error":{"code":"rate_limit","message":"slow down"}}', RateLimitError),
    (500, b'{"code":"fail","message":"upstream error"}', ServerError),
    (503, b'{"error":{"message":"no available channel"}}', OverloadedError),
]


@pytest.mark.parametrize("cls", [*GATEWAYS, MountSeaProvider])
@pytest.mark.parametrize(("status", "raw", "error"), GATEWAY_ERRORS)
async def test_http_status_errors_raise_their_class_with_the_message(
    fake: FakeProvider, cls: type[Provider], status: int, raw: bytes, error: type[PersonaError]
) -> None:
    fake.inject(Fault.body(raw, status=status), times=50)
    err = await fail(make(cls, fake), deadline=0.5)
    assert type(err) is error
    assert (err.code, err.http_status) == (status, status)
    assert err.message
    assert err.message != f"provider answered code {status}"


# -- the fake speaks each contract's own errors ------------------------------------------------


@pytest.mark.parametrize("cls", ALL)
async def test_fake_rate_limit_and_unknown_clip_come_back_in_the_providers_style(
    cls: type[Provider],
) -> None:
    async with FakeProvider(rate_limit=1, rate_period=30) as fake:
        fake.missing_tasks.add("clip_404")
        with_task = PersonaRequest("clip_404", "clip_404", "n", "d")
        err = await fail(make(cls, fake), with_task)
        assert isinstance(err, ValidationError)
        limited = await fail(make(cls, fake), deadline=0.2)
        assert type(limited) is RateLimitError


def test_every_new_kind_is_registered() -> None:
    kinds = {"acedata", "cometapi", "deerapi", "ttapi", "mountsea"}
    assert kinds <= set(PROVIDER_KINDS)
    for kind in kinds:
        assert PROVIDER_KINDS[kind].kind == kind


def test_provider_error_tables_hold_every_documented_code() -> None:
    from persona_async import CODE_TO_EXCEPTION
    from persona_async._exceptions import HTTP_STATUS_TO_EXCEPTION
    from persona_async._providers.acedata import ACEDATA_ERRORS
    from persona_async._providers.ttapi import TTAPI_ERRORS

    documented_acedata = {code: cls for _, code, cls in ACEDATA_ERRORS_DOC}
    documented_acedata["timeout"] = ProviderTimeoutError
    assert {k: v for k, v in ACEDATA_ERRORS.items() if isinstance(k, str)} == documented_acedata
    assert {k: TTAPI_ERRORS[k] for k, _ in TTAPI_ERRORS_DOC} == dict(TTAPI_ERRORS_DOC)
    assert TTAPI_ERRORS["FAILED"] is GenerationFailedError
    assert TTAPI_ERRORS[504] is ProviderTimeoutError
    # The HTTP-status table keeps every code of the seeds' table and reads 400/502/503/504.
    assert dict(CODE_TO_EXCEPTION).items() <= dict(HTTP_STATUS_TO_EXCEPTION).items()
    assert {400, 502, 503, 504} <= set(HTTP_STATUS_TO_EXCEPTION)


def test_every_provider_decodes_through_a_listed_reply_style() -> None:
    from persona_async._providers._styles import REPLY_STYLES

    for cls in PROVIDER_KINDS.values():
        assert type(cls.wire.reply) in set(REPLY_STYLES.values()), cls
