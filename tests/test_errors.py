"""The code-to-exception table, and every way a reply can go wrong, against real loopback servers.

Each error a caller gets is a ``PersonaError`` subclass that says what happened (its class), what
the provider said (``code``, ``http_status``, ``message``) and for which request (``task_id``,
``audio_id``). Exact types are asserted throughout: no aiohttp, msgspec or asyncio exception may
reach the caller.
"""

from __future__ import annotations

import asyncio
import pickle
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from _support import CRUN_PATH, FAMILY_PATH, crun, fast_retry, kie
from _support import free_port as closed_port
from aiohttp import web
from aiohttp.test_utils import TestServer

from persona_async import (
    CODE_TO_EXCEPTION,
    AuthenticationError,
    CrunProvider,
    FeatureDisabledError,
    GenerationFailedError,
    InsufficientCreditsError,
    InvalidRequestError,
    KieProvider,
    MaintenanceError,
    MalformedResponseError,
    MusicAccessError,
    NotFoundError,
    OutcomeUnknownError,
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
from persona_async._transport import MAX_BODY_BYTES
from persona_async.testing import FakeProvider, Fault

pytestmark = pytest.mark.anyio


DOCUMENTED = {
    401: AuthenticationError,
    402: InsufficientCreditsError,
    404: NotFoundError,
    409: PersonaExistsError,
    422: ValidationError,
    429: RateLimitError,
    451: MusicAccessError,
    455: MaintenanceError,
    500: ServerError,
    501: GenerationFailedError,
    505: FeatureDisabledError,
}
# The README's tree: only these are retried (a 429 within the deadline, a 455 through the
# maintenance wait, a 500 within max_retries); every other code is final.
RETRIED = frozenset({429, 455, 500})
# The codes each persona page documents (docs.crun.ai/suno-api/suno-persona-generate,
# docs.sunoapi.org/suno-api/generate-persona; kie adds 501 and 505).
CRUN_CODES = (401, 402, 404, 422, 429, 455, 500, 501, 505)
FAMILY_CODES = (401, 402, 404, 409, 422, 429, 451, 455, 500, 501, 505)

MakeProvider = Callable[..., Provider]


PROVIDERS = [pytest.param(crun, id="crun"), pytest.param(kie, id="family")]


def request(audio_id: str = "clip_1") -> PersonaRequest:
    return PersonaRequest("task_1", audio_id, "Neon Siren", "Smoky late-night R&B")


def client(provider: Provider, deadline: float = 5.0, **fields: Any) -> PersonaClient:
    """``FAST_RETRY`` with retries off: the retries that could hide the error under test end at
    once (no resend of a 500, a deadline shorter than any Retry-After used below, a maintenance
    wait of a few probes); ``fields`` change the policy."""
    retry = fast_retry(**{"max_retries": 0, "max_maintenance_wait": 0.05, **fields})
    return PersonaClient([provider], retry=retry, deadline=deadline)


async def raised(provider: Provider, req: PersonaRequest | None = None, **kw: Any) -> PersonaError:
    async with client(provider, **kw) as c:
        with pytest.raises(PersonaError) as info:
            await c.create_persona(req or request())
    return info.value


@asynccontextmanager
async def serve(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    """An aiohttp test server answering both contract paths with ``handler``; yields its URL."""
    app = web.Application()
    app.router.add_post(CRUN_PATH, handler)
    app.router.add_post(FAMILY_PATH, handler)
    async with TestServer(app, host="127.0.0.1") as server:
        yield str(server.make_url("")).rstrip("/")


# -- the table ---------------------------------------------------------------------------------


def test_table_maps_every_documented_code_to_its_class() -> None:
    assert dict(CODE_TO_EXCEPTION) == DOCUMENTED


def test_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        CODE_TO_EXCEPTION[418] = PersonaError  # type: ignore[index]


def test_each_class_names_the_code_it_stands_for() -> None:
    for code, cls in DOCUMENTED.items():
        assert cls.default_code == code
        assert cls("x").code == code


def test_invalid_request_is_a_validation_error_without_a_code() -> None:
    err = InvalidRequestError("name must not be empty", field="name")
    assert isinstance(err, ValidationError)
    assert isinstance(err, ValueError)
    assert err.code is None
    assert err.field == "name"


# -- every code, both contracts, both forms ----------------------------------------------------


def _cases(make: Any, provider_id: str, codes: tuple[int, ...]) -> list[Any]:
    return [
        pytest.param(make, code, form, id=f"{provider_id}-{code}-{form}")
        for code in codes
        for form in ("envelope", "http")
    ]


def _fault(form: str, code: int) -> Fault:
    # A Retry-After past the client's deadline makes a 429 final on its first answer.
    retry_after = 60.0 if code == 429 else None
    if form == "envelope":
        return Fault.envelope(code, retry_after=retry_after)
    return Fault.http(code, retry_after=retry_after)


@pytest.mark.parametrize(
    ("make", "code", "form"), _cases(crun, "crun", CRUN_CODES) + _cases(kie, "family", FAMILY_CODES)
)
async def test_every_documented_code_raises_its_class_with_the_details(
    fake: FakeProvider, make: MakeProvider, code: int, form: str
) -> None:
    fake.inject(_fault(form, code), times=50)
    err = await raised(make(fake), request("clip_7"))

    assert type(err) is DOCUMENTED[code]
    assert err.code == code
    assert err.http_status == (200 if form == "envelope" else code)
    assert err.provider == make(fake).name
    assert (err.task_id, err.audio_id) == ("task_1", "clip_7")
    assert err.message
    assert err.attempts >= 1
    assert err.retryable is (code in RETRIED)


@pytest.mark.parametrize("form", ["envelope", "http"])
async def test_rate_limit_error_carries_the_providers_retry_after(
    fake: FakeProvider, form: str
) -> None:
    fake.inject(_fault(form, 429))
    err = await raised(kie(fake))
    assert type(err) is RateLimitError
    assert err.retry_after == 60.0


async def test_http_429_with_a_non_json_body_is_still_a_rate_limit() -> None:
    async def gateway_429(request: web.Request) -> web.Response:
        return web.Response(
            status=429,
            text="<html><body>429 Too Many Requests</body></html>",
            content_type="text/html",
            headers={"Retry-After": "60"},
        )

    async with serve(gateway_429) as url:
        err = await raised(CrunProvider(api_key="k", base_url=url, rate_limit=None))
    assert type(err) is RateLimitError
    assert err.http_status == 429
    assert err.retry_after == 60.0
    assert err.provider == "crun"
    assert err.message == "HTTP 429 Too Many Requests"  # the gateway's page says nothing more


@pytest.mark.parametrize("message", ["insufficient credits", "Your credit balance is too low"])
async def test_family_429_about_credits_is_insufficient_credits(
    fake: FakeProvider, message: str
) -> None:
    fake.inject(Fault.envelope(429, message))
    err = await raised(kie(fake))
    assert type(err) is InsufficientCreditsError
    assert err.code == 429  # the provider's own number stays on the error
    assert message in str(err)
    assert fake.request_count == 1  # no retry: credits do not come back by waiting


async def test_crun_429_about_credits_stays_a_rate_limit(fake: FakeProvider) -> None:
    # The credits quirk is the family's legacy schema; crun's 429 means rate limited.
    fake.inject(Fault.envelope(429, "insufficient credits", retry_after=60.0))
    err = await raised(crun(fake))
    assert type(err) is RateLimitError


@pytest.mark.parametrize("code", [405, 430])
@pytest.mark.parametrize("form", ["envelope", "http"])
async def test_family_legacy_frequency_codes_are_rate_limits(
    fake: FakeProvider, code: int, form: str
) -> None:
    fake.inject(
        Fault.envelope(code, retry_after=60.0)
        if form == "envelope"
        else Fault.http(code, retry_after=60.0)
    )
    err = await raised(kie(fake))
    assert type(err) is RateLimitError
    assert err.code == code
    assert err.retry_after == 60.0


async def test_crun_405_is_not_read_with_the_familys_legacy_meaning(fake: FakeProvider) -> None:
    fake.inject(Fault.envelope(405))
    err = await raised(crun(fake))
    assert type(err) is PersonaError
    assert err.code == 405


@pytest.mark.parametrize("make", PROVIDERS)
@pytest.mark.parametrize("form", ["envelope", "http"])
async def test_unknown_code_keeps_its_number_on_a_plain_persona_error(
    fake: FakeProvider, make: MakeProvider, form: str
) -> None:
    fake.inject(Fault.envelope(418) if form == "envelope" else Fault.http(418))
    err = await raised(make(fake))
    assert type(err) is PersonaError
    assert err.code == 418
    assert err.http_status == (200 if form == "envelope" else 418)
    assert err.retryable is False
    assert fake.request_count == 1


# -- replies that are not the envelope ---------------------------------------------------------


async def test_html_gateway_page_is_malformed_with_status_and_excerpt(fake: FakeProvider) -> None:
    fake.inject(Fault.html(502))
    err = await raised(kie(fake))
    assert type(err) is MalformedResponseError
    assert err.http_status == 502
    assert "502 Bad Gateway" in err.excerpt
    assert len(err.excerpt) <= 163
    assert err.retryable is True  # a gateway page is transient: the family resends it


async def test_crun_html_gateway_page_is_outcome_unknown_since_the_gateway_may_have_forwarded_it(
    fake: FakeProvider,
) -> None:
    fake.inject(Fault.html(502))
    err = await raised(crun(fake))
    assert type(err) is OutcomeUnknownError
    assert err.http_status == 502
    cause = err.__cause__
    assert type(cause) is MalformedResponseError
    assert "502 Bad Gateway" in cause.excerpt
    assert fake.request_count == 1


@pytest.mark.parametrize("make", PROVIDERS)
@pytest.mark.parametrize(
    ("fault", "status"),
    [
        pytest.param(Fault.empty(), 200, id="empty"),
        pytest.param(Fault.truncated(), 200, id="truncated"),
        pytest.param(Fault.body(b"[1, 2, 3]"), 200, id="array"),
        pytest.param(Fault.body(b'{"code": "200", "data": null}'), 200, id="code-as-string"),
        pytest.param(Fault.body(b'{"message": "ok", "msg": "ok"}'), 200, id="no-code"),
        pytest.param(Fault.body(b"not json at all", content_type="text/plain"), 200, id="text"),
        pytest.param(Fault.body(b"<html>oops</html>", status=400), 400, id="html-400"),
    ],
)
async def test_reply_that_is_not_the_envelope_is_malformed(
    fake: FakeProvider, make: MakeProvider, fault: Fault, status: int
) -> None:
    fake.inject(fault)
    err = await raised(make(fake))
    assert type(err) is MalformedResponseError
    assert err.http_status == status
    assert len(err.excerpt) <= 163
    assert err.retryable is False
    assert (err.task_id, err.audio_id) == ("task_1", "clip_1")
    assert err.provider == make(fake).name
    assert err.message.startswith(f"HTTP {status} ")
    # What was wrong, in words: nothing at all, or not the provider's envelope.
    assert (": empty reply (" in err.message) is (fault.kind == "empty")
    assert (": reply is not the " in err.message) is (fault.kind != "empty")
    assert fake.request_count == 1


@pytest.mark.parametrize("make", PROVIDERS)
async def test_the_content_type_of_a_reply_that_is_not_the_envelope_is_named(
    fake: FakeProvider, make: MakeProvider
) -> None:
    fake.inject(Fault.body(b"not json at all", content_type="text/plain"))
    err = await raised(make(fake))
    assert "HTTP 200 text/plain: " in err.message


@pytest.mark.parametrize("make", PROVIDERS)
@pytest.mark.parametrize("status", [400, 418])
async def test_code_200_without_a_persona_id_on_an_error_status_is_read_by_the_status(
    fake: FakeProvider, make: MakeProvider, status: int
) -> None:
    # The envelope says 200 but the HTTP status does not, and there is no persona: the status
    # is the only code there is (a 4xx or 5xx is never a success).
    fake.inject(Fault.body(_no_persona_id(make), status=status))
    err = await raised(make(fake))
    assert (err.code, err.http_status) == (status, status)
    assert type(err) is PersonaError  # neither code is in the table


@pytest.mark.parametrize("make", PROVIDERS)
async def test_code_200_without_a_persona_id_is_malformed(
    fake: FakeProvider, make: MakeProvider
) -> None:
    fake.inject(Fault.body(_no_persona_id(make)))
    err = await raised(make(fake))
    assert type(err) is MalformedResponseError
    assert err.message == "HTTP 200: success without a persona id"
    assert err.provider == make(fake).name


def _no_persona_id(make: MakeProvider) -> bytes:
    key = "persona_id" if make is crun else "personaId"
    return b'{"code": 200, "msg": "ok", "data": {"%s": ""}}' % key.encode()


async def test_truncated_json_excerpt_shows_what_came_back(fake: FakeProvider) -> None:
    fake.inject(Fault.truncated())
    err = await raised(kie(fake))
    assert type(err) is MalformedResponseError
    assert err.excerpt.startswith('{"code":200')


@pytest.mark.parametrize("make", PROVIDERS)
async def test_oversized_body_is_malformed_and_not_read_whole(
    fake: FakeProvider, make: MakeProvider
) -> None:
    fake.inject(Fault.body(b'{"code": 200, "pad": "' + b"x" * MAX_BODY_BYTES + b'"}'))
    err = await raised(make(fake))
    if make is crun:  # a 2xx it cannot read: taken, so an unknown outcome on crun
        assert type(err) is OutcomeUnknownError
        assert isinstance(err.__cause__, MalformedResponseError)
        err = err.__cause__
    assert type(err) is MalformedResponseError
    assert err.retryable  # the family resends it: its 409 then says whether it was made
    assert "a persona may exist" in err.message
    assert err.http_status == 200
    assert str(MAX_BODY_BYTES) in err.message
    assert 0 < len(err.excerpt) <= 163
    assert err.excerpt.startswith('{"code": 200')
    assert err.provider == make(fake).name


@pytest.mark.parametrize("make", PROVIDERS)
async def test_a_reply_of_exactly_the_size_limit_is_still_read(
    fake: FakeProvider, make: MakeProvider
) -> None:
    key = "persona_id" if make is crun else "personaId"
    envelope = b'{"code": 200, "msg": "ok", "data": {"%s": "p-big"}}' % key.encode()
    fake.inject(Fault.body(envelope + b" " * (MAX_BODY_BYTES - len(envelope))))
    async with client(make(fake)) as c:
        persona = await c.create_persona(request())
    assert persona.persona_id == "p-big"


async def test_a_reply_trickling_in_byte_by_byte_still_ends_at_the_attempt_timeout() -> None:
    # Each byte comes well within the timeout, but the attempt as a whole does not.
    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for _ in range(40):
            await response.write(b" ")
            await asyncio.sleep(0.05)
        await response.write(b'{"code": 200, "msg": "ok", "data": {"persona_id": "late"}}')
        return response

    async with serve(trickle) as url:
        provider = CrunProvider(api_key="k", base_url=url, rate_limit=None, timeout=0.5)
        started = asyncio.get_running_loop().time()
        err = await raised(provider)
        took = asyncio.get_running_loop().time() - started
    assert type(err) is OutcomeUnknownError  # sent, then timed out: crun does not resend
    assert isinstance(err.__cause__, ProviderTimeoutError)
    assert took < 1.5


async def test_oversized_streamed_body_without_length_is_malformed() -> None:
    async def endless_json(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b'{"code": 200, "pad": "')
        chunk = b"y" * 65536
        for _ in range(MAX_BODY_BYTES // len(chunk) + 2):
            await response.write(chunk)
        await response.write(b'"}')
        return response

    async with serve(endless_json) as url:
        unknown = await raised(CrunProvider(api_key="k", base_url=url, rate_limit=None))
    assert type(unknown) is OutcomeUnknownError
    err = unknown.__cause__
    assert type(err) is MalformedResponseError
    assert err.http_status == 200
    assert str(MAX_BODY_BYTES) in err.message
    assert err.excerpt.startswith('{"code": 200')


@pytest.mark.parametrize("make", PROVIDERS)
async def test_redirect_is_an_error_and_never_followed(
    fake: FakeProvider, make: MakeProvider
) -> None:
    async with FakeProvider() as elsewhere:
        path = CRUN_PATH if make is crun else FAMILY_PATH
        fake.inject(Fault.redirect(elsewhere.url + path))
        err = await raised(make(fake), max_retries=3)
        assert elsewhere.request_count == 0
    assert type(err) is MalformedResponseError
    assert err.http_status == 307
    assert err.retryable is False
    assert "redirect" in err.message
    assert fake.request_count == 1


@pytest.mark.parametrize("make", PROVIDERS)
async def test_a_redirect_names_where_it_pointed_and_any_3xx_is_one(
    fake: FakeProvider, make: MakeProvider
) -> None:
    fake.inject(Fault.redirect("https://login.example.net/api"))
    err = await raised(make(fake))
    assert type(err) is MalformedResponseError
    assert "redirect to https://login.example.net refused" in err.message
    assert "base_url" in err.message
    assert err.provider == make(fake).name
    # 300 is the first redirect status: refused the same way, even without a Location.
    fake.inject(Fault.body(b'{"code": 200, "data": {"personaId": "p"}}', status=300))
    first = await raised(make(fake))
    assert (type(first), first.http_status) == (MalformedResponseError, 300)
    assert "HTTP 300 redirect refused" in first.message


@pytest.mark.parametrize("make", PROVIDERS)
async def test_a_4xx_html_page_is_malformed_with_what_came_back(
    fake: FakeProvider, make: MakeProvider
) -> None:
    # 400 is past the redirects: the page is read and shown, not refused as a redirect.
    fake.inject(Fault.body(b"<html>400 Bad Request</html>", status=400, content_type="text/html"))
    err = await raised(make(fake))
    assert type(err) is MalformedResponseError
    assert err.http_status == 400
    assert "400 Bad Request" in err.excerpt
    assert "redirect" not in err.message
    assert err.provider == make(fake).name


@pytest.mark.parametrize("provider_cls", [CrunProvider, KieProvider])
async def test_connection_refused_is_a_connection_error_that_was_not_sent(
    provider_cls: type[Provider],
) -> None:
    provider = provider_cls(
        api_key="k", base_url=f"http://127.0.0.1:{closed_port()}", rate_limit=None
    )
    err = await raised(provider)
    assert type(err) is ProviderConnectionError
    assert isinstance(err, OSError)
    assert err.sent is False
    assert err.retryable is True
    assert err.provider == provider.name
    assert (err.task_id, err.audio_id) == ("task_1", "clip_1")


async def test_a_transport_error_says_what_failed_and_whether_it_was_sent(
    fake: FakeProvider,
) -> None:
    port = closed_port()
    refused = await raised(
        CrunProvider(api_key="k", base_url=f"http://127.0.0.1:{port}", rate_limit=None)
    )
    # In our words: no aiohttp class name, no "ssl:default" for an http:// URL.
    assert refused.message == (
        f"could not connect to 127.0.0.1:{port} (Connection refused): the request was not sent"
    )
    fake.inject(Fault.reset_after())
    reset = await raised(kie(fake))
    assert type(reset) is ProviderConnectionError
    # ClientOSError or ServerDisconnectedError, as the reset happens to land.
    assert re.match(r"\w+Error after the request was sent", reset.message), reset.message


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        (b"\xff\xfe not UTF-8 at all", "\ufffd\ufffd not UTF-8 at all"),
        (b"x" * 160, "x" * 160),
        (b"y" * 161, "y" * 160 + "..."),
    ],
    ids=["not-utf8", "exactly-160", "longer"],
)
async def test_the_excerpt_of_a_bad_reply_shows_its_start_readably(
    fake: FakeProvider, body: bytes, shown: str
) -> None:
    fake.inject(Fault.body(body, content_type="text/plain"))
    err = await raised(kie(fake))
    assert type(err) is MalformedResponseError
    assert err.excerpt == shown


@pytest.mark.parametrize("provider_cls", [CrunProvider, KieProvider])
async def test_reply_that_is_not_http_is_malformed(provider_cls: type[Provider]) -> None:
    async def broken_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n{}")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(broken_http, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        provider = provider_cls(api_key="k", base_url=f"http://127.0.0.1:{port}", rate_limit=None)
        err = await raised(provider, max_retries=3)
    finally:
        server.close()
        await server.wait_closed()
    assert type(err) is MalformedResponseError
    assert err.sent is True
    assert err.retryable is False
    assert err.attempts == 1


async def test_slow_reply_is_a_timeout_error(fake: FakeProvider) -> None:
    fake.inject(Fault.slow(0.3))
    err = await raised(kie(fake, timeout=0.1))
    assert type(err) is ProviderTimeoutError
    assert isinstance(err, TimeoutError)
    assert err.sent is True


ALL_FAULTS = [
    Fault.envelope(500),
    Fault.http(503),
    Fault.html(504),
    Fault.truncated(),
    Fault.empty(),
    Fault.body(b"\xff\xfe garbage"),
    Fault.reset_before(),
    Fault.reset_after(),
    Fault.slow(0.3),
    Fault.redirect("http://127.0.0.1:1/elsewhere"),
]


@pytest.mark.parametrize("make", PROVIDERS)
@pytest.mark.parametrize("fault", ALL_FAULTS, ids=lambda f: f.kind)
async def test_no_foreign_exception_ever_reaches_the_caller(
    fake: FakeProvider, make: MakeProvider, fault: Fault
) -> None:
    fake.inject(fault, times=10)
    err = await raised(make(fake, timeout=0.1), max_retries=1)
    assert type(err).__module__ == "persona_async._exceptions"


# -- errors survive pickling -------------------------------------------------------------------


def _public_error_classes() -> list[type[PersonaError]]:
    import persona_async._exceptions as module

    return sorted(
        (
            value
            for name, value in vars(module).items()
            if isinstance(value, type)
            and issubclass(value, PersonaError)
            and not name.startswith("_")
        ),
        key=lambda cls: cls.__name__,
    )


# The attributes each class adds to the common ones, set to non-default values.
EXTRA_ATTRIBUTES: dict[type[PersonaError], dict[str, Any]] = {
    PersonaExistsError: {"after_ambiguous_attempt": True},
    RateLimitError: {"retry_after": 2.5},
    InvalidRequestError: {"field": "name"},
    MalformedResponseError: {"excerpt": "<html>", "sent": False},
    ProviderConnectionError: {"sent": False},
    ProviderTimeoutError: {"sent": False},
    OutcomeUnknownError: {"request": request()},
}


@pytest.mark.parametrize("cls", _public_error_classes(), ids=lambda cls: cls.__name__)
def test_every_error_class_survives_pickle_with_all_attributes(cls: type[PersonaError]) -> None:
    err = cls(
        "what went wrong",
        code=430,
        http_status=503,
        provider="kie-2",
        task_id="task_1",
        audio_id="clip_1",
        retryable=True,
        attempts=3,
        **EXTRA_ATTRIBUTES.get(cls, {}),
    )
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is cls
    assert vars(copy) == vars(err)
    for name, value in EXTRA_ATTRIBUTES.get(cls, {}).items():
        assert getattr(copy, name) == value
    assert (copy.code, copy.http_status, copy.attempts) == (430, 503, 3)
    assert copy.args == err.args
    assert str(copy) == str(err)
    assert repr(copy) == repr(err)


async def test_errors_from_a_real_run_survive_pickle(fake: FakeProvider) -> None:
    fake.inject(Fault.reset_after())
    unknown = await raised(crun(fake), request("clip_9"))
    fake.inject(Fault.envelope(451))
    access = await raised(kie(fake))
    refused = await raised(
        CrunProvider(api_key="k", base_url=f"http://127.0.0.1:{closed_port()}", rate_limit=None)
    )
    for err in (unknown, access, refused):
        copy = pickle.loads(pickle.dumps(err))
        assert type(copy) is type(err)
        assert vars(copy) == vars(err)
    assert pickle.loads(pickle.dumps(unknown)).request == request("clip_9")


async def test_a_host_that_does_not_resolve_is_said_in_our_words_and_not_counted_as_sent() -> None:
    provider = CrunProvider(api_key="k" * 32, base_url="https://nohost.invalid", rate_limit=None)
    async with PersonaClient([provider], max_retries=1, backoff_initial=0.01) as client:
        with pytest.raises(ProviderConnectionError) as info:
            await client.create_persona(PersonaRequest("task_1", "clip_1", "Neon", "R&B"))
        stats = client.stats()[provider.name]
    err = info.value
    assert err.message.startswith("could not resolve the host name nohost.invalid (")
    assert err.message.endswith("): the request was not sent")
    assert "ClientConnector" not in str(err)
    assert "ssl:default" not in str(err)
    assert (err.sent, err.attempts) == (False, 2)
    assert (stats.sent, stats.retries) == (0, 1)  # tried twice, nothing left the machine
