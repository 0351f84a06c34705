"""Retries of a single ``create_persona`` call: what is resent, how often, how long it waits, and
how a create whose first attempt may have succeeded is handled (never a silent duplicate)."""

from __future__ import annotations

import email.utils
import time
from typing import Any

import pytest
from _support import CRUN_PATH, crun, fast_retry, kie
from _support import free_port as closed_port
from aiohttp import web
from aiohttp.test_utils import TestServer

from persona_async import (
    AuthenticationError,
    CrunProvider,
    FeatureDisabledError,
    GenerationFailedError,
    InsufficientCreditsError,
    KieProvider,
    MusicAccessError,
    NotFoundError,
    OutcomeUnknownError,
    Persona,
    PersonaClient,
    PersonaError,
    PersonaExistsError,
    PersonaRequest,
    Provider,
    ProviderConnectionError,
    ProviderTimeoutError,
    RateLimitError,
    ServerError,
    ValidationError,
)
from persona_async._retry import parse_retry_after
from persona_async.testing import FakeProvider, Fault

pytestmark = pytest.mark.anyio

PROVIDERS = [pytest.param(crun, id="crun"), pytest.param(kie, id="family")]

REQUEST = PersonaRequest("task_1", "clip_1", "Neon Siren", "Smoky late-night R&B")


def client(provider: Provider, deadline: float | None = None, **fields: Any) -> PersonaClient:
    """A one-lane client resending as ``FAST_RETRY`` does, with ``fields`` changed."""
    return PersonaClient([provider], retry=fast_retry(**fields), deadline=deadline)


async def create(provider: Provider, **kw: Any) -> Persona:
    async with client(provider, **kw) as c:
        return await c.create_persona(REQUEST)


async def fail(provider: Provider, **kw: Any) -> PersonaError:
    async with client(provider, **kw) as c:
        with pytest.raises(PersonaError) as info:
            await c.create_persona(REQUEST)
    return info.value


def gap(fake: FakeProvider) -> float:
    """Seconds between the first and the second request the fake received."""
    first, second = fake.requests[:2]
    return second.arrived - first.arrived


# -- what is retried ---------------------------------------------------------------------------


@pytest.mark.parametrize("make", PROVIDERS)
async def test_500_then_success_returns_the_persona_after_two_requests(
    fake: FakeProvider, make: Any
) -> None:
    fake.inject(Fault.envelope(500))
    provider = make(fake)
    async with client(provider) as c:
        persona = await c.create_persona(REQUEST)
        stats = c.stats()[provider.name]
    assert persona.persona_id in fake.personas
    assert [r.response_code for r in fake.requests] == [500, 200]
    assert fake.requests[0].body == fake.requests[1].body  # the same request, resent
    assert sum(fake.creations.values()) == 1
    assert (stats.sent, stats.retries, stats.succeeded) == (2, 1, 1)


@pytest.mark.parametrize("make", PROVIDERS)
@pytest.mark.parametrize("code", [429, 455, 500])
@pytest.mark.parametrize("form", ["envelope", "http"])
async def test_transient_code_is_retried_until_success(
    fake: FakeProvider, make: Any, code: int, form: str
) -> None:
    fake.inject(Fault.envelope(code) if form == "envelope" else Fault.http(code))
    # A 429 cools the lane until its window has passed: keep the window short.
    persona = await create(make(fake, rate_period=0.2))
    assert persona.persona_id in fake.personas
    assert [r.response_code for r in fake.requests] == [code, 200]


FINAL = {
    401: AuthenticationError,
    402: InsufficientCreditsError,
    404: NotFoundError,
    409: PersonaExistsError,
    422: ValidationError,
    451: MusicAccessError,
    501: GenerationFailedError,
    505: FeatureDisabledError,
}


@pytest.mark.parametrize("make", PROVIDERS)
@pytest.mark.parametrize("code", sorted(FINAL))
@pytest.mark.parametrize("form", ["envelope", "http"])
async def test_final_code_is_never_retried(
    fake: FakeProvider, make: Any, code: int, form: str
) -> None:
    fake.inject(Fault.envelope(code) if form == "envelope" else Fault.http(code), times=5)
    err = await fail(make(fake), max_retries=5)
    assert type(err) is FINAL[code]
    assert err.retryable is False
    assert fake.request_count == 1
    assert err.attempts == 1


@pytest.mark.parametrize("make", PROVIDERS)
@pytest.mark.parametrize("max_retries", [0, 1, 3])
async def test_max_retries_bounds_the_requests_sent(
    fake: FakeProvider, make: Any, max_retries: int
) -> None:
    fake.inject(Fault.http(500), times=20)
    err = await fail(make(fake), max_retries=max_retries)
    assert type(err) is ServerError
    assert fake.request_count == max_retries + 1
    assert err.attempts == max_retries + 1


async def test_rate_limit_waits_do_not_use_up_max_retries(fake: FakeProvider) -> None:
    fake.inject(Fault.envelope(429), times=3)
    # Without Retry-After each cooldown lasts until the window has passed: keep it short.
    persona = await create(crun(fake, rate_period=0.1), max_retries=0)
    assert persona.persona_id in fake.personas
    assert fake.request_count == 4


async def test_maintenance_is_waited_out_by_probing(fake: FakeProvider) -> None:
    fake.inject(Fault.envelope(455), times=3)
    persona = await create(kie(fake), max_retries=0)
    assert persona.persona_id in fake.personas
    assert fake.request_count == 4


# -- how long it waits -------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["envelope", "http"])
async def test_retry_after_seconds_is_honoured(fake: FakeProvider, form: str) -> None:
    fault = (
        Fault.envelope(429, retry_after=0.3)
        if form == "envelope"
        else Fault.http(429, retry_after=0.3)
    )
    fake.inject(fault)
    await create(crun(fake))
    assert 0.29 <= gap(fake) < 1.5  # backoff alone would be <= 0.05


async def test_retry_after_is_capped_by_retry_after_max(fake: FakeProvider) -> None:
    fake.inject(Fault.http(429, retry_after=30))
    started = time.monotonic()
    await create(kie(fake), retry_after_max=0.2)
    assert 0.19 <= gap(fake) < 1.5
    assert time.monotonic() - started < 3


async def test_retry_after_as_http_date_is_honoured_up_to_the_cap() -> None:
    arrivals: list[float] = []

    async def handler(request: web.Request) -> web.Response:
        arrivals.append(time.monotonic())
        if len(arrivals) == 1:
            an_hour = email.utils.formatdate(time.time() + 3600, usegmt=True)
            body = {"code": 429, "message": "rate limited", "data": None}
            return web.json_response(body, status=429, headers={"Retry-After": an_hour})
        return web.json_response({"code": 200, "message": "ok", "data": {"persona_id": "p1"}})

    app = web.Application()
    app.router.add_post(CRUN_PATH, handler)
    async with TestServer(app, host="127.0.0.1") as server:
        url = str(server.make_url("")).rstrip("/")
        persona = await create(
            CrunProvider(api_key="k", base_url=url, rate_limit=None), retry_after_max=0.3
        )
    assert persona.persona_id == "p1"
    # Parsed (else backoff <= 0.05) and capped (else an hour).
    assert 0.29 <= arrivals[1] - arrivals[0] < 1.5


async def test_retry_after_beyond_the_deadline_fails_at_once(fake: FakeProvider) -> None:
    fake.inject(Fault.envelope(429, retry_after=60), times=5)
    started = time.monotonic()
    err = await fail(kie(fake), deadline=5.0)
    assert time.monotonic() - started < 1.0
    assert type(err) is RateLimitError
    assert err.retry_after == 60
    assert fake.request_count == 1


async def test_deadline_bounds_a_call_whose_replies_are_slow(fake: FakeProvider) -> None:
    # timeout x retries would be 0.2 s x 11; the deadline stops it at about 0.6 s.
    fake.inject(Fault.slow(0.7), times=20)
    started = time.monotonic()
    err = await fail(kie(fake, timeout=0.2), max_retries=10, deadline=0.6)
    elapsed = time.monotonic() - started
    assert type(err) is ProviderTimeoutError
    assert isinstance(err, TimeoutError)
    assert 0.5 <= elapsed < 1.1
    assert 2 <= fake.request_count <= 4
    assert err.attempts == fake.request_count


async def test_deadline_bounds_backoff_waits_too(fake: FakeProvider) -> None:
    fake.inject(Fault.envelope(500), times=100)
    started = time.monotonic()
    err = await fail(kie(fake), max_retries=100, backoff_initial=0.1, backoff_max=0.1, deadline=0.4)
    assert time.monotonic() - started < 1.0
    assert 2 <= fake.request_count < 100
    # Usually the last 500. A retry that falls due just before the deadline is still sent,
    # with only the time left as its timeout, and then fails as a timeout instead.
    assert type(err) in (ServerError, ProviderTimeoutError)


class TestParseRetryAfter:
    NOW = 1_445_412_480.0  # Wed, 21 Oct 2015 07:28:00 GMT

    @pytest.mark.parametrize(
        ("value", "seconds"),
        [("120", 120.0), ("0", 0.0), (" 7 ", 7.0), ("1.5", 1.5), ("1e3", 1000.0)],
    )
    def test_delta_seconds(self, value: str, seconds: float) -> None:
        assert parse_retry_after(value) == seconds

    def test_http_date_in_the_future(self) -> None:
        assert parse_retry_after("Wed, 21 Oct 2015 07:29:30 GMT", now=self.NOW) == 90.0

    def test_http_date_in_the_past_means_now(self) -> None:
        assert parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now=self.NOW) == 0.0

    def test_http_date_against_the_real_clock(self) -> None:
        value = email.utils.formatdate(time.time() + 100, usegmt=True)
        seconds = parse_retry_after(value)
        assert seconds is not None
        assert 98 <= seconds <= 100

    @pytest.mark.parametrize(
        "value",
        [
            None,
            "",
            "   ",
            "soon",
            "nan",
            "inf",
            "-inf",
            "1e400",
            "Wed, 99 Foo 2015 07:28:00 GMT",
            "Mon, 32 Jan 2024 00:00:00 GMT",
            "Wed, 21 Oct 2015 07:28:00",  # no zone: cannot tell when it means
        ],
    )
    def test_garbage_is_ignored(self, value: str | None) -> None:
        assert parse_retry_after(value, now=self.NOW) is None

    def test_negative_seconds_never_mean_waiting_backwards(self) -> None:
        assert parse_retry_after("-5") in (None, 0.0)


# -- failures that may have created a persona ---------------------------------------------------


async def test_crun_reset_after_create_is_outcome_unknown_and_not_resent(
    fake: FakeProvider,
) -> None:
    fake.inject(Fault.reset_after())
    err = await fail(crun(fake), max_retries=3)
    assert type(err) is OutcomeUnknownError
    assert err.request == REQUEST
    assert err.retryable is False
    assert "retry_ambiguous=True" in err.message
    cause = err.__cause__
    assert type(cause) is ProviderConnectionError
    assert cause.sent is True
    assert fake.request_count == 1
    assert fake.creations[("crun", "clip_1")] == 1  # it did exist: reporting success would lie


async def test_crun_reply_timeout_is_outcome_unknown_and_not_resent(fake: FakeProvider) -> None:
    fake.inject(Fault.slow(0.3))
    err = await fail(crun(fake, timeout=0.1), max_retries=3)
    assert type(err) is OutcomeUnknownError
    assert type(err.__cause__) is ProviderTimeoutError
    assert fake.request_count == 1


async def test_crun_with_retry_ambiguous_resends_and_may_duplicate(fake: FakeProvider) -> None:
    fake.inject(Fault.reset_after())
    persona = await create(crun(fake, retry_ambiguous=True))
    assert persona.persona_id in fake.personas
    assert fake.request_count == 2
    assert fake.creations[("crun", "clip_1")] == 2  # the duplicate the user opted into


async def test_crun_reset_before_create_is_reported_as_ambiguous_since_the_request_was_sent(
    fake: FakeProvider,
) -> None:
    # The fake resets after reading the request: the client cannot tell this from a lost
    # reply, so it must not assume nothing was created.
    fake.inject(Fault.reset_before())
    err = await fail(crun(fake), max_retries=3)
    assert type(err) is OutcomeUnknownError
    assert fake.request_count == 1
    assert not fake.creations


async def test_family_reset_before_create_is_resent_and_succeeds(fake: FakeProvider) -> None:
    fake.inject(Fault.reset_before())
    persona = await create(kie(fake))
    assert persona.persona_id in fake.personas
    assert fake.request_count == 2
    assert fake.creations[("family", "clip_1")] == 1


async def test_family_409_after_ambiguous_retry_is_reported_not_hidden(
    fake: FakeProvider,
) -> None:
    fake.inject(Fault.reset_after())
    err = await fail(kie(fake))
    assert type(err) is PersonaExistsError
    assert err.after_ambiguous_attempt is True
    assert "earlier attempt" in err.message
    assert "may have created" in err.message
    assert err.code == 409
    assert err.attempts == 2
    assert fake.request_count == 2
    assert fake.creations[("family", "clip_1")] == 1


async def test_family_409_without_an_earlier_lost_attempt_is_plain(fake: FakeProvider) -> None:
    fake.inject(Fault.http(500))  # a failure that was answered, not lost
    fake.inject(Fault.envelope(409))
    err = await fail(kie(fake))
    assert type(err) is PersonaExistsError
    assert err.after_ambiguous_attempt is False
    assert fake.request_count == 2


@pytest.mark.parametrize("provider_cls", [CrunProvider, KieProvider])
async def test_connection_refused_is_retried_up_to_max_retries(
    provider_cls: type[Provider],
) -> None:
    provider = provider_cls(
        api_key="k", base_url=f"http://127.0.0.1:{closed_port()}", rate_limit=None
    )
    async with client(provider, max_retries=2) as c:
        with pytest.raises(ProviderConnectionError) as info:
            await c.create_persona(REQUEST)
        stats = c.stats()[provider.name]
    err = info.value
    assert type(err) is ProviderConnectionError
    assert err.sent is False
    assert err.attempts == 3
    # Refused: nothing left the machine, so nothing counts as sent.
    assert (stats.sent, stats.retries) == (0, 2)
