"""Rules checked before sending: a broken request raises ``InvalidRequestError`` naming the field
and the rule, and nothing reaches the provider. Broken configuration fails at construction."""

from __future__ import annotations

import math
from typing import Any

import pytest
from _support import make

from persona_async import (
    ApiBoxProvider,
    ApikleyProvider,
    CrunProvider,
    InvalidRequestError,
    KieProvider,
    PersonaClient,
    PersonaRequest,
    Provider,
    SunoApiProvider,
)
from persona_async.testing import FakeProvider

pytestmark = pytest.mark.anyio

#: The family hosts that document the 10-30 s window (api.box's current page does not).
WINDOWED = [SunoApiProvider, KieProvider]


def request(**changes: Any) -> PersonaRequest:
    fields: dict[str, Any] = {
        "task_id": "task_1",
        "audio_id": "clip_1",
        "name": "Neon Siren",
        "description": "Smoky late-night R&B",
    }
    fields.update(changes)
    required = [fields.pop(k) for k in ("task_id", "audio_id", "name", "description")]
    return PersonaRequest(*required, **fields)


async def rejected(
    provider: Provider, req: PersonaRequest, fake: FakeProvider, *more: Provider
) -> InvalidRequestError:
    async with PersonaClient([provider, *more], backoff_initial=0.01, backoff_max=0.05) as c:
        with pytest.raises(InvalidRequestError) as info:
            await c.create_persona(req)
    assert fake.request_count == 0, "an invalid request reached the provider"
    err = info.value
    assert type(err) is InvalidRequestError
    assert err.code is None
    assert err.attempts == 0
    return err


async def accepted(provider: Provider, req: PersonaRequest, fake: FakeProvider) -> None:
    async with PersonaClient([provider], backoff_initial=0.01, backoff_max=0.05) as c:
        persona = await c.create_persona(req)
    assert persona.persona_id
    assert fake.request_count == 1


# -- required strings --------------------------------------------------------------------------

REQUIRED = ["task_id", "audio_id", "name", "description"]


@pytest.mark.parametrize("cls", [CrunProvider, KieProvider, ApikleyProvider])
@pytest.mark.parametrize("field", REQUIRED)
@pytest.mark.parametrize("value", ["", "   ", "\t\n"], ids=["empty", "spaces", "whitespace"])
async def test_empty_required_field_is_refused_unsent(
    fake: FakeProvider, cls: type[Provider], field: str, value: str
) -> None:
    err = await rejected(make(cls, fake), request(**{field: value}), fake)
    assert err.field == field
    assert field in str(err)
    assert "empty" in str(err)


@pytest.mark.parametrize("cls", [CrunProvider, KieProvider])
@pytest.mark.parametrize("field", REQUIRED)
@pytest.mark.parametrize("value", [None, 42, b"bytes"], ids=["none", "int", "bytes"])
async def test_non_string_required_field_is_refused_unsent(
    fake: FakeProvider, cls: type[Provider], field: str, value: object
) -> None:
    err = await rejected(make(cls, fake), request(**{field: value}), fake)
    assert err.field == field
    assert "must be a string" in str(err)
    assert type(value).__name__ in str(err)


async def test_refusal_names_the_provider_and_the_request(fake: FakeProvider) -> None:
    err = await rejected(make(CrunProvider, fake), request(name=""), fake)
    assert err.provider == "crun"
    assert (err.task_id, err.audio_id) == ("task_1", "clip_1")


# -- crun's documented limits ------------------------------------------------------------------

CRUN_LIMITS = [("name", 100), ("description", 1000), ("style", 1000)]


@pytest.mark.parametrize(("field", "limit"), CRUN_LIMITS)
async def test_crun_length_limit_is_refused_one_past_it(
    fake: FakeProvider, field: str, limit: int
) -> None:
    err = await rejected(make(CrunProvider, fake), request(**{field: "x" * (limit + 1)}), fake)
    assert err.field == field
    assert f"at most {limit} characters" in str(err)
    assert str(limit + 1) in str(err)


@pytest.mark.parametrize(("field", "limit"), CRUN_LIMITS)
async def test_crun_length_limit_itself_is_allowed(
    fake: FakeProvider, field: str, limit: int
) -> None:
    await accepted(make(CrunProvider, fake), request(**{field: "x" * limit}), fake)
    assert fake.requests[0].json is not None
    assert len(fake.requests[0].json[field]) == limit


async def test_family_documents_no_length_limits(fake: FakeProvider) -> None:
    await accepted(make(KieProvider, fake), request(name="x" * 500), fake)


async def test_crun_style_must_be_a_string(fake: FakeProvider) -> None:
    err = await rejected(make(CrunProvider, fake), request(style=7), fake)
    assert err.field == "style"
    assert "must be a string" in str(err)


# -- vocal window ------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [CrunProvider, *WINDOWED])
@pytest.mark.parametrize("field", ["vocal_start", "vocal_end"])
@pytest.mark.parametrize(
    ("value", "rule"),
    [
        (-1.0, ">= 0"),
        (-0.001, ">= 0"),
        (math.nan, "finite"),
        (math.inf, "finite"),
        (True, "number of seconds"),
        ("12", "number of seconds"),
    ],
    ids=["negative", "tiny-negative", "nan", "inf", "bool", "string"],
)
async def test_bad_vocal_time_is_refused_unsent(
    fake: FakeProvider, cls: type[Provider], field: str, value: object, rule: str
) -> None:
    err = await rejected(make(cls, fake), request(**{field: value}), fake)
    assert err.field == field
    assert rule in str(err)


@pytest.mark.parametrize("cls", [CrunProvider, ApiBoxProvider, *WINDOWED])
@pytest.mark.parametrize(("start", "end"), [(20.0, 20.0), (25.0, 12.0)], ids=["equal", "before"])
async def test_vocal_end_not_after_start_is_refused_unsent(
    fake: FakeProvider, cls: type[Provider], start: float, end: float
) -> None:
    err = await rejected(make(cls, fake), request(vocal_start=start, vocal_end=end), fake)
    assert err.field == "vocal_end"
    assert "greater than vocal_start" in str(err)


async def test_crun_allows_any_positive_vocal_window(fake: FakeProvider) -> None:
    await accepted(make(CrunProvider, fake), request(vocal_start=0, vocal_end=95.5), fake)


@pytest.mark.parametrize("cls", WINDOWED)
@pytest.mark.parametrize(
    ("start", "end"),
    [(0.0, 9.99), (5.0, 40.5), (100.0, 131.0)],
    ids=["too-short", "too-long", "too-long-late"],
)
async def test_family_window_outside_10_to_30_seconds_is_refused_unsent(
    fake: FakeProvider, cls: type[Provider], start: float, end: float
) -> None:
    err = await rejected(make(cls, fake), request(vocal_start=start, vocal_end=end), fake)
    assert err.field == "vocal_end"
    assert "between 10 and 30 seconds" in str(err)


@pytest.mark.parametrize("cls", WINDOWED)
@pytest.mark.parametrize(("start", "end"), [(0, 10), (5.5, 35.5), (60, 75)])
async def test_family_window_inside_10_to_30_seconds_is_sent(
    fake: FakeProvider, cls: type[Provider], start: float, end: float
) -> None:
    await accepted(make(cls, fake), request(vocal_start=start, vocal_end=end), fake)


@pytest.mark.parametrize(
    ("given", "ok"),
    [
        ({"vocal_start": 25.0}, False),  # 30 - 25 = 5
        ({"vocal_start": 35.0}, False),  # past the default end
        ({"vocal_end": 5.0}, False),  # 5 - 0 = 5
        ({"vocal_start": 20.0}, True),  # 30 - 20 = 10
        ({"vocal_end": 10.0}, True),  # 10 - 0 = 10
        ({"vocal_end": 30.0}, True),
    ],
    ids=lambda v: repr(v),
)
async def test_family_window_with_one_bound_uses_defaults_0_and_30(
    fake: FakeProvider, given: dict[str, float], ok: bool
) -> None:
    provider = make(SunoApiProvider, fake)
    if ok:
        await accepted(provider, request(**given), fake)
    else:
        err = await rejected(provider, request(**given), fake)
        assert "between 10 and 30 seconds" in str(err)


@pytest.mark.parametrize(
    "extra", [{"vocal_start": 0.0}, {"vocal_end": 20.0}, {"style": "jazz"}], ids=lambda v: repr(v)
)
async def test_apikley_refuses_fields_its_api_does_not_document(
    fake: FakeProvider, extra: dict[str, Any]
) -> None:
    err = await rejected(make(ApikleyProvider, fake), request(**extra), fake)
    (field,) = extra
    assert err.field == field
    assert "ApikleyProvider" in str(err)
    assert "not supported" in str(err)


async def test_apikley_sends_a_request_without_optional_fields(fake: FakeProvider) -> None:
    await accepted(make(ApikleyProvider, fake), request(), fake)


# -- routing -----------------------------------------------------------------------------------


async def test_unknown_provider_name_is_refused_unsent(fake: FakeProvider) -> None:
    err = await rejected(make(CrunProvider, fake), request(provider="krun"), fake)
    assert err.field == "provider"
    assert "'krun'" in str(err)
    assert "crun" in err.message  # the lanes it could have meant


async def test_missing_provider_with_several_lanes_is_refused_unsent(fake: FakeProvider) -> None:
    err = await rejected(make(CrunProvider, fake), request(), fake, make(KieProvider, fake))
    assert err.field == "provider"
    assert "several lanes" in str(err)
    assert "crun" in err.message
    assert "kie" in err.message


async def test_missing_provider_with_one_lane_goes_to_that_lane(fake: FakeProvider) -> None:
    await accepted(make(KieProvider, fake), request(), fake)
    assert fake.requests[0].kind == "family"


async def test_provider_names_the_lane_not_the_kind(fake: FakeProvider) -> None:
    lanes = [make(KieProvider, fake, name="kie-a"), make(KieProvider, fake, name="kie-b")]
    async with PersonaClient(lanes) as c:
        with pytest.raises(InvalidRequestError) as info:
            await c.create_persona(request(provider="kie"))
        persona = await c.create_persona(request(provider="kie-b"))
    assert info.value.field == "provider"
    assert persona.provider == "kie-b"
    assert fake.request_count == 1


async def test_not_a_persona_request_is_refused(fake: FakeProvider) -> None:
    async with PersonaClient([make(CrunProvider, fake)]) as c:
        with pytest.raises(InvalidRequestError) as info:
            await c.create_persona({"task_id": "t"})  # type: ignore[arg-type]
    assert info.value.field == "request"
    assert fake.request_count == 0


# -- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "base_url",
    [
        "http://api.crun.ai",
        "http://10.0.0.5:8080",
        "http://0.0.0.0:8080",
        "http://localhost.example.com",
        "http://127.0.0.1.nip.io",
    ],
)
def test_plain_http_to_a_non_loopback_host_is_refused(base_url: str) -> None:
    with pytest.raises(ValueError, match="plain http"):
        CrunProvider(api_key="k", base_url=base_url)


@pytest.mark.parametrize(
    "base_url", ["http://127.0.0.1:8080", "http://localhost:1", "http://[::1]:8080"]
)
def test_plain_http_to_loopback_is_allowed(base_url: str) -> None:
    assert CrunProvider(api_key="k", base_url=base_url).base_url == base_url


@pytest.mark.parametrize(
    "base_url",
    [
        "https://user:secret@api.crun.ai",
        "https://token@api.crun.ai",
        "https://api.crun.ai/?api_key=secret",
        "https://api.crun.ai/#secret",
    ],
)
def test_base_url_carrying_credentials_or_query_is_refused(base_url: str) -> None:
    with pytest.raises(ValueError, match="credentials, a query or a fragment") as info:
        KieProvider(api_key="k", base_url=base_url)
    assert "secret" not in str(info.value)


@pytest.mark.parametrize("base_url", ["ftp://api.crun.ai", "api.crun.ai", "https://"])
def test_base_url_that_is_not_http_is_refused(base_url: str) -> None:
    with pytest.raises(ValueError, match="http"):
        CrunProvider(api_key="k", base_url=base_url)


@pytest.mark.parametrize(
    ("cls", "env"),
    [
        (CrunProvider, "CRUN_API_KEY"),
        (ApikleyProvider, "APIKLEY_API_KEY"),
        (SunoApiProvider, "SUNOAPI_API_KEY"),
        (KieProvider, "KIE_API_KEY"),
        (ApiBoxProvider, "APIBOX_API_KEY"),
    ],
)
@pytest.mark.parametrize("unset", ["missing", "empty"])
def test_missing_api_key_names_the_env_var(
    monkeypatch: pytest.MonkeyPatch, cls: type[Provider], env: str, unset: str
) -> None:
    if unset == "missing":
        monkeypatch.delenv(env, raising=False)
    else:
        monkeypatch.setenv(env, "")
    with pytest.raises(ValueError, match=env) as info:
        cls()
    assert type(info.value) is ValueError
    assert "api_key" in str(info.value)


async def test_api_key_is_read_from_the_env_var(
    monkeypatch: pytest.MonkeyPatch, fake: FakeProvider
) -> None:
    monkeypatch.setenv("KIE_API_KEY", fake.api_key)
    await accepted(KieProvider(base_url=fake.url, rate_limit=None), request(), fake)
    assert fake.requests[0].api_key == fake.api_key


def test_api_key_with_a_line_break_is_refused() -> None:
    with pytest.raises(ValueError, match="line break"):
        CrunProvider(api_key="abc\r\nX-Evil: 1")


@pytest.mark.parametrize(
    "bad",
    [
        {"rate_limit": 0},
        {"rate_period": 0},
        {"max_concurrency": 0},
        {"timeout": 0},
        {"connect_timeout": -1},
    ],
    ids=lambda v: repr(v),
)
def test_nonsense_provider_limits_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=">"):
        CrunProvider(api_key="k", **bad)


def test_two_lanes_with_one_name_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        PersonaClient([KieProvider(api_key="a"), KieProvider(api_key="b")])


def test_client_without_providers_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one provider"):
        PersonaClient([])


@pytest.mark.parametrize(
    "bad", [{"max_retries": -1}, {"deadline": 0}, {"backoff_initial": -0.1}], ids=lambda v: repr(v)
)
def test_nonsense_retry_settings_are_refused(bad: dict[str, Any]) -> None:
    (name,) = bad
    with pytest.raises(ValueError, match=name):
        PersonaClient([CrunProvider(api_key="k")], **bad)


# -- the common request's quick check agrees with the full rules --------------------------------

_EDGES: list[Any] = ["x", "   ", "", " a ", "\u3000", "x" * 100, "x" * 101, "x" * 1001, None, 7]


def _every_provider() -> list[type[Provider]]:
    import persona_async

    return [
        cls
        for name in persona_async.__all__
        if name.endswith("Provider")
        and isinstance(cls := getattr(persona_async, name), type)
        and issubclass(cls, Provider)
        and cls is not Provider
    ]


def _verdict(check: Any, req: PersonaRequest) -> str | None:
    try:
        check(req)
    except InvalidRequestError as err:
        return f"{err.field}: {err}"
    return None


@pytest.mark.parametrize("cls", _every_provider(), ids=lambda c: c.__name__)
def test_every_provider_accepts_exactly_what_its_full_rules_accept(cls: type[Provider]) -> None:
    # validate() accepts the usual request (four strings, nothing optional) in one quick test:
    # it must never pass a request the full rules refuse, nor refuse one they pass.
    provider = cls(api_key="k")
    fields = ("task_id", "audio_id", "name", "description", "style")
    checked = 0
    for field in fields:
        for value in _EDGES:
            req = request(**{field: value})
            assert _verdict(provider.validate, req) == _verdict(provider._validate_fully, req), (
                f"{cls.__name__}: {field}={value!r}"
            )
            checked += 1
    assert checked == len(fields) * len(_EDGES)
    assert _verdict(provider.validate, request()) is None  # the usual request passes
