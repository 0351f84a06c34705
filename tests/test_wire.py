"""What goes over the wire, as the provider sees it, and how replies are read."""

from __future__ import annotations

import msgspec
import pytest
from _support import CRUN_PATH, FAMILY_PATH, FAST_RETRY, make

from persona_async import (
    ApiBoxProvider,
    ApikleyProvider,
    CrunProvider,
    KieProvider,
    MalformedResponseError,
    Persona,
    PersonaClient,
    PersonaError,
    PersonaExistsError,
    PersonaRequest,
    Provider,
    SourceNotReadyError,
    SunoApiProvider,
    ValidationError,
    __version__,
)
from persona_async.testing import FakeProvider, Fault, RequestRecord

pytestmark = pytest.mark.anyio

FAMILY = [SunoApiProvider, KieProvider, ApiBoxProvider]


FULL = PersonaRequest(
    "task_1",
    "clip_1",
    "Neon Siren",
    "Smoky late-night R&B",
    vocal_start=12.5,
    vocal_end=40,
    style="neo-soul, breathy",
)
MINIMAL = PersonaRequest("task_1", "clip_1", "Neon Siren", "Smoky late-night R&B")


async def create(provider: Provider, req: PersonaRequest) -> Persona:
    async with PersonaClient([provider], retry=FAST_RETRY) as c:
        return await c.create_persona(req)


async def fail(provider: Provider, req: PersonaRequest = MINIMAL) -> PersonaError:
    async with PersonaClient([provider], max_retries=0) as c:
        with pytest.raises(PersonaError) as info:
            await c.create_persona(req)
    return info.value


def only_request(fake: FakeProvider) -> RequestRecord:
    (record,) = fake.requests
    return record


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


# -- request bodies ----------------------------------------------------------------------------


async def test_crun_body_is_snake_case_with_suno_id(fake: FakeProvider) -> None:
    await create(make(CrunProvider, fake), FULL)
    record = only_request(fake)
    assert record.json == {
        "task_id": "task_1",
        "suno_id": "clip_1",
        "name": "Neon Siren",
        "description": "Smoky late-night R&B",
        "vocal_start": 12.5,
        "vocal_end": 40,
        "style": "neo-soul, breathy",
    }


@pytest.mark.parametrize("cls", FAMILY)
async def test_family_body_is_camel_case_with_audio_id(
    fake: FakeProvider, cls: type[Provider]
) -> None:
    await create(
        make(cls, fake),
        PersonaRequest(
            "task_1", "clip_1", "Neon Siren", "Smoky", vocal_start=12.5, vocal_end=40, style="jazz"
        ),
    )
    assert only_request(fake).json == {
        "taskId": "task_1",
        "audioId": "clip_1",
        "name": "Neon Siren",
        "description": "Smoky",
        "vocalStart": 12.5,
        "vocalEnd": 40,
        "style": "jazz",
    }


@pytest.mark.parametrize(
    ("cls", "keys"),
    [
        (CrunProvider, ["task_id", "suno_id", "name", "description"]),
        (KieProvider, ["taskId", "audioId", "name", "description"]),
        (ApikleyProvider, ["taskId", "audioId", "name", "description"]),
    ],
)
async def test_optional_fields_left_none_are_omitted_not_null(
    fake: FakeProvider, cls: type[Provider], keys: list[str]
) -> None:
    await create(make(cls, fake), MINIMAL)
    record = only_request(fake)
    assert record.json is not None
    assert list(record.json) == keys
    assert b"null" not in record.body


async def test_body_is_compact_utf8_json(fake: FakeProvider) -> None:
    await create(make(CrunProvider, fake), PersonaRequest("t", "c", "Zoë 東京", "naïve"))
    body = only_request(fake).body
    assert msgspec.json.decode(body)["name"] == "Zoë 東京"
    assert "Zoë 東京".encode() in body


@pytest.mark.parametrize(
    ("cls", "path", "kind"),
    [(CrunProvider, CRUN_PATH, "crun"), (KieProvider, FAMILY_PATH, "family")],
)
async def test_request_goes_to_the_documented_path_as_a_post(
    fake: FakeProvider, cls: type[Provider], path: str, kind: str
) -> None:
    await create(make(cls, fake), MINIMAL)
    record = only_request(fake)
    assert (record.method, record.path, record.kind, record.query_string) == (
        "POST",
        path,
        kind,
        "",
    )


def test_default_base_urls_are_the_public_hosts() -> None:
    expected = {
        CrunProvider: "https://api.crun.ai/api/v1/client/job/suno-persona-generate",
        ApikleyProvider: "https://api.apikley.ru/api/v1/generate/generate-persona",
        SunoApiProvider: "https://api.sunoapi.org/api/v1/generate/generate-persona",
        KieProvider: "https://api.kie.ai/api/v1/generate/generate-persona",
        ApiBoxProvider: "https://apibox.erweima.ai/api/v1/generate/generate-persona",
    }
    for cls, url in expected.items():
        assert cls(api_key="k").url == url


def test_trailing_slash_on_base_url_does_not_double_the_path() -> None:
    provider = KieProvider(api_key="k", base_url="http://127.0.0.1:9/")
    assert provider.url == "http://127.0.0.1:9/api/v1/generate/generate-persona"


# -- headers -----------------------------------------------------------------------------------


async def test_crun_sends_its_key_in_x_api_key_only(fake: FakeProvider) -> None:
    await create(make(CrunProvider, fake), MINIMAL)
    record = only_request(fake)
    headers = lower(record.headers)
    assert record.api_key == fake.api_key  # read from x-api-key by the fake
    assert "x-api-key" in headers
    assert "authorization" not in headers


@pytest.mark.parametrize("cls", [*FAMILY, ApikleyProvider])
async def test_family_sends_its_key_as_a_bearer_token_only(
    fake: FakeProvider, cls: type[Provider]
) -> None:
    await create(make(cls, fake), MINIMAL)
    record = only_request(fake)
    headers = lower(record.headers)
    assert record.api_key == fake.api_key  # the fake reads only "Bearer <key>" here
    assert "authorization" in headers
    assert "x-api-key" not in headers


@pytest.mark.parametrize("cls", [CrunProvider, KieProvider])
async def test_every_request_says_who_it_is_and_what_it_sends(
    fake: FakeProvider, cls: type[Provider]
) -> None:
    fake.inject(Fault.envelope(500))  # the retry must carry the same headers
    await create(make(cls, fake), MINIMAL)
    assert len(fake.requests) == 2
    for record in fake.requests:
        headers = lower(record.headers)
        assert headers["user-agent"] == f"persona-async/{__version__}"
        assert headers["content-type"] == "application/json"
        assert headers["accept"] == "application/json"
        assert "cookie" not in headers
    assert fake.requests[0].body == fake.requests[1].body


# -- replies -----------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [CrunProvider, KieProvider])
async def test_persona_is_filled_from_the_reply_and_the_request(
    fake: FakeProvider, cls: type[Provider]
) -> None:
    provider = make(cls, fake, name="main-account")
    persona = await create(provider, MINIMAL)
    (persona_id,) = fake.personas
    assert persona == Persona(
        persona_id=persona_id,
        provider="main-account",
        task_id="task_1",
        audio_id="clip_1",
        name="Neon Siren",
        description="Smoky late-night R&B",
    )


@pytest.mark.parametrize(
    ("cls", "raw"),
    [
        (
            CrunProvider,
            b'{"code": 200, "message": "success", "requestId": "r-1",'
            b' "data": {"persona_id": "p_extra", "credits_left": 90, "voice": {"a": [1]}}}',
        ),
        (
            KieProvider,
            b'{"code": 200, "msg": "success", "traceId": "t-1", "data": {"personaId": "p_extra",'
            b' "name": "Neon Siren", "description": "Smoky", "createdAt": 1700000000}}',
        ),
        (CrunProvider, b'{"code": 200, "data": {"persona_id": "p_extra"}}'),  # no message
    ],
    ids=["crun", "family", "crun-no-message"],
)
async def test_reply_with_unknown_extra_fields_is_accepted(
    fake: FakeProvider, cls: type[Provider], raw: bytes
) -> None:
    fake.inject(Fault.body(raw))
    persona = await create(make(cls, fake), MINIMAL)
    assert persona.persona_id == "p_extra"


@pytest.mark.parametrize(
    ("cls", "raw"),
    [
        (CrunProvider, b'{"code": 200, "message": "success", "data": {}}'),
        (CrunProvider, b'{"code": 200, "message": "success", "data": null}'),
        (CrunProvider, b'{"code": 200, "message": "success"}'),
        (CrunProvider, b'{"code": 200, "message": "success", "data": {"persona_id": 123}}'),
        (CrunProvider, b'{"code": 200, "message": "success", "data": {"persona_id": null}}'),
        (CrunProvider, b'{"code": 200, "message": "success", "data": {"persona_id": ""}}'),
        (CrunProvider, b'{"code": 200, "message": "success", "data": {"personaId": "p"}}'),
        (CrunProvider, b'{"code": 200, "message": "success", "data": ["p"]}'),
        (KieProvider, b'{"code": 200, "msg": "success", "data": {"name": "n"}}'),
        (KieProvider, b'{"code": 200, "msg": "success", "data": {"personaId": ["p"]}}'),
        (KieProvider, b'{"code": 200, "msg": "success", "data": {"persona_id": "p"}}'),
        (KieProvider, b'{"code": 200, "msg": "success", "data": "p"}'),
    ],
    ids=lambda v: v.decode()[38:] if isinstance(v, bytes) else v.kind,
)
async def test_success_without_a_usable_persona_id_is_malformed(
    fake: FakeProvider, cls: type[Provider], raw: bytes
) -> None:
    fake.inject(Fault.body(raw))
    err = await fail(make(cls, fake))
    assert type(err) is MalformedResponseError
    assert err.http_status == 200
    assert err.excerpt.startswith('{"code": 200')
    assert fake.request_count == 1  # a 200 may have created it: never resent


@pytest.mark.parametrize(
    ("cls", "raw"),
    [
        (CrunProvider, b'{"code": 422, "message": "task_id not found", "data": "??"}'),
        (KieProvider, b'{"code": 422, "msg": "task_id not found", "data": [1, 2]}'),
    ],
    ids=["crun", "family"],
)
async def test_error_reply_with_odd_data_is_still_read(
    fake: FakeProvider, cls: type[Provider], raw: bytes
) -> None:
    fake.inject(Fault.body(raw))
    err = await fail(make(cls, fake))
    assert type(err) is ValidationError
    assert err.message == "task_id not found"


async def test_error_reply_without_a_message_still_says_its_code(fake: FakeProvider) -> None:
    fake.inject(Fault.body(b'{"code": 422}'))
    err = await fail(make(CrunProvider, fake))
    assert type(err) is ValidationError
    assert "422" in str(err)


@pytest.mark.parametrize(
    ("cls", "message", "expected"),
    [
        # crun's wording also fits a wrong task id: it stays a plain 422.
        (CrunProvider, "task_id not found", ValidationError),
        # the family's says the song is not finished: retryable later.
        (KieProvider, "record status is not success", SourceNotReadyError),
    ],
)
async def test_unknown_task_is_the_providers_422_with_its_message(
    fake: FakeProvider, cls: type[Provider], message: str, expected: type[ValidationError]
) -> None:
    fake.missing_tasks.add("task_1")
    err = await fail(make(cls, fake))
    assert type(err) is expected
    assert err.retryable is (expected is SourceNotReadyError)
    assert err.message == message
    assert err.http_status == 200


async def test_family_second_persona_for_one_audio_is_exists_not_ambiguous(
    fake: FakeProvider,
) -> None:
    provider = make(KieProvider, fake)
    # remember_for=0: the client would otherwise answer the same request from its memory.
    async with PersonaClient([provider], max_retries=0, remember_for=0) as c:
        await c.create_persona(MINIMAL)
        with pytest.raises(PersonaExistsError) as info:
            await c.create_persona(MINIMAL)
    assert info.value.after_ambiguous_attempt is False
    assert "earlier attempt" not in str(info.value)
    assert fake.creations[("family", "clip_1")] == 1


async def test_crun_makes_a_new_persona_for_every_create(fake: FakeProvider) -> None:
    # remember_for=0: the client would otherwise answer the same request from its memory.
    async with PersonaClient([make(CrunProvider, fake)], remember_for=0) as c:
        first = await c.create_persona(MINIMAL)
        second = await c.create_persona(MINIMAL)
    assert first.persona_id != second.persona_id
    assert fake.creations[("crun", "clip_1")] == 2
