"""Async-task providers (kie's market route, Evolink): submit, then poll the provider's task.

What the provider sees (the submit body, the status queries and their pace), what the caller
gets (the persona id from the task, the task id on every outcome, typed errors for failed and
unfinished tasks), and the promises: a poll never holds a create slot, a 429 on polling slows
polling only, and a task already submitted is polled, never submitted again.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest
from _support import make

from persona_async import (
    AuthenticationError,
    EvolinkProvider,
    FeatureDisabledError,
    GenerationFailedError,
    InsufficientCreditsError,
    InvalidRequestError,
    KieJobsProvider,
    MaintenanceError,
    MalformedResponseError,
    MusicAccessError,
    NotFoundError,
    OutcomeUnknownError,
    PersonaClient,
    PersonaError,
    PersonaRequest,
    PollPolicy,
    Provider,
    ProviderTimeoutError,
    RateLimitError,
    ServerError,
    ValidationError,
)
from persona_async.testing import FakeProvider, Fault

pytestmark = pytest.mark.anyio

FAST = PollPolicy(initial=0.05, factor=2.0, max_interval=0.2, min_interval=0.02, rate_limit=50)
ASYNC = [KieJobsProvider, EvolinkProvider]
STATUS_KIND = {KieJobsProvider: "kie-jobs-status", EvolinkProvider: "evolink-status"}
REQ = PersonaRequest("task_1", "clip_1", "Neon Siren", "Smoky")


def provider(cls: type[Provider], fake: FakeProvider, **kw: Any) -> Provider:
    return make(cls, fake, **{"poll": FAST, **kw})


def client(p: Provider, **kw: Any) -> PersonaClient:
    settings: dict[str, Any] = {"backoff_initial": 0.01, "backoff_max": 0.05, "deadline": 5.0}
    return PersonaClient([p], **{**settings, **kw})


async def fail(p: Provider, req: PersonaRequest = REQ, **kw: Any) -> PersonaError:
    async with client(p, **{"max_retries": 0, **kw}) as c:
        with pytest.raises(PersonaError) as info:
            await c.create_persona(req)
    return info.value


def submits(fake: FakeProvider, cls: type[Provider]) -> int:
    return sum(1 for r in fake.requests if r.kind == cls.kind)


def polls(fake: FakeProvider, cls: type[Provider]) -> list[float]:
    return [r.arrived for r in fake.requests if r.kind == STATUS_KIND[cls]]


# -- the wire ----------------------------------------------------------------------------------


async def test_kie_jobs_submit_names_the_persona_model_with_snake_case_input(
    fake: FakeProvider,
) -> None:
    req = PersonaRequest("task_1", "clip_1", "n", "d", vocal_start=5, vocal_end=25, style="jazz")
    async with client(provider(KieJobsProvider, fake)) as c:
        await c.create_persona(req)
    submit, *queries = fake.requests
    assert (submit.method, submit.path) == ("POST", "/api/v1/jobs/createTask")
    assert submit.json == {
        "model": "ai-music-api/generate-persona",
        "input": {
            "task_id": "task_1",
            "audio_id": "clip_1",
            "name": "n",
            "description": "d",
            "vocal_start": 5,
            "vocal_end": 25,
            "style": "jazz",
        },
    }
    (task_id,) = fake.tasks
    for query in queries:
        assert (query.method, query.path) == ("GET", "/api/v1/jobs/recordInfo")
        assert query.query_string == f"taskId={task_id}"
        assert query.api_key == fake.api_key
        assert query.body == b""


async def test_evolink_submit_is_model_params_with_source_task_and_result_id(
    fake: FakeProvider,
) -> None:
    req = PersonaRequest("task_1", "clip_1", "n", "d", vocal_start=5, vocal_end=20)
    async with client(provider(EvolinkProvider, fake)) as c:
        await c.create_persona(req)
    submit, *queries = fake.requests
    assert (submit.method, submit.path) == ("POST", "/v1/audios/generations")
    assert submit.json == {
        "model": "suno-persona",
        "model_params": {
            "source_task_id": "task_1",
            "result_id": "clip_1",
            "name": "n",
            "description": "d",
            "vocal_start": 5,
            "vocal_end": 20,
        },
    }
    (task_id,) = fake.tasks
    assert queries
    assert {(q.method, q.path) for q in queries} == {("GET", f"/v1/tasks/{task_id}")}
    assert all(q.api_key == fake.api_key for q in queries)


@pytest.mark.parametrize("cls", ASYNC)
async def test_persona_comes_from_the_task_and_names_the_task(
    fake: FakeProvider, cls: type[Provider]
) -> None:
    fake.task_seconds = 0.35
    async with client(provider(cls, fake)) as c:
        persona = await c.create_persona(REQ)
    (task_id,) = fake.tasks
    assert persona.persona_id in fake.personas
    assert persona.provider_task_id == task_id
    assert submits(fake, cls) == 1
    assert len(polls(fake, cls)) >= 2  # it was still running at the first query


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("vocal_start", 5.0, "vocal_end"),  # one end alone
        ("vocal_end", 40.0, "vocal_start"),
    ],
)
async def test_evolink_vocal_window_needs_both_ends(
    fake: FakeProvider, field: str, value: float, rule: str
) -> None:
    err = await fail(
        provider(EvolinkProvider, fake), PersonaRequest("t", "c", "n", "d", **{field: value})
    )
    assert isinstance(err, InvalidRequestError)
    assert err.field == rule
    assert fake.requests == []


@pytest.mark.parametrize("cls", ASYNC)
async def test_vocal_window_outside_10_to_30_seconds_is_refused(
    fake: FakeProvider, cls: type[Provider]
) -> None:
    err = await fail(
        provider(cls, fake), PersonaRequest("t", "c", "n", "d", vocal_start=0, vocal_end=45)
    )
    assert isinstance(err, InvalidRequestError)
    assert "between 10 and 30" in str(err)
    assert fake.requests == []


async def test_provider_task_id_on_a_sync_provider_is_refused(fake: FakeProvider) -> None:
    from persona_async import CrunProvider

    req = PersonaRequest("t", "c", "n", "d", provider_task_id="job-1")
    err = await fail(make(CrunProvider, fake), req)
    assert isinstance(err, InvalidRequestError)
    assert err.field == "provider_task_id"
    assert fake.requests == []


@pytest.mark.parametrize("task_id", ["", "  ", 7])
async def test_empty_or_non_string_provider_task_id_is_refused(
    fake: FakeProvider, task_id: object
) -> None:
    req = PersonaRequest("t", "c", "n", "d", provider_task_id=task_id)  # type: ignore[arg-type]
    err = await fail(provider(KieJobsProvider, fake), req)
    assert isinstance(err, InvalidRequestError)
    assert err.field == "provider_task_id"
    assert fake.requests == []


# -- where the persona id is -------------------------------------------------------------------


def _record(result_json: str, state: str = "success") -> bytes:
    import msgspec

    data = {"taskId": "x", "state": state, "resultJson": result_json, "failCode": "", "failMsg": ""}
    return msgspec.json.encode({"code": 200, "msg": "success", "data": data})


@pytest.mark.parametrize(
    "result_json",
    [
        '{"persona_id": "p_7"}',
        '{"personaId": "p_7"}',
        '{"data": {"persona_id": "p_7"}}',
        '{"data": {"personaId": "p_7", "name": "n"}, "creditsConsumed": 0}',
    ],
)
async def test_kie_persona_id_is_found_where_clients_have_seen_it(
    fake: FakeProvider, result_json: str
) -> None:
    fake.inject(Fault.body(_record(result_json)), path="kie-jobs-status")
    async with client(provider(KieJobsProvider, fake)) as c:
        persona = await c.create_persona(REQ)
    assert persona.persona_id == "p_7"


@pytest.mark.parametrize(
    "body",
    [
        _record('{"resultUrls": ["https://x"]}'),
        _record('{"data": [{"id": "clip"}]}'),
        _record(""),
        _record("not json"),
        b'{"code": 200, "msg": "success", "data": {"taskId": "x"}}',
    ],
    ids=["no-key", "music-result", "empty", "not-json", "no-state"],
)
async def test_kie_task_reply_without_a_readable_persona_id_is_malformed(
    fake: FakeProvider, body: bytes
) -> None:
    fake.inject(Fault.body(body), path="kie-jobs-status")
    err = await fail(provider(KieJobsProvider, fake))
    assert type(err) is MalformedResponseError
    assert (err.http_status, err.provider, err.retryable) == (200, "kie-jobs", False)
    assert not err.message.endswith("(None)")  # what the decoder found wrong, when it did
    assert err.excerpt
    assert err.provider_task_id in fake.tasks
    assert submits(fake, KieJobsProvider) == 1


@pytest.mark.parametrize(
    "body",
    [
        b'{"id": "t", "status": "completed", "result_data": {}}',
        b'{"id": "t", "status": "completed"}',
        b'{"id": "t", "status": "completed", "result_data": [{"result_id": "r"}]}',
    ],
)
async def test_evolink_task_reply_without_result_data_persona_id_is_malformed(
    fake: FakeProvider, body: bytes
) -> None:
    fake.inject(Fault.body(body), path="evolink-status")
    err = await fail(provider(EvolinkProvider, fake))
    assert type(err) is MalformedResponseError
    assert err.message.startswith("HTTP 200")
    assert (err.http_status, err.provider, err.retryable) == (200, "evolink", False)
    assert err.provider_task_id in fake.tasks


@pytest.mark.parametrize("cls", ASYNC)
async def test_a_redirect_answering_a_status_query_is_refused_and_names_where_it_pointed(
    fake: FakeProvider, cls: type[Provider]
) -> None:
    fake.inject(Fault.redirect("https://login.example.net/api"), path=STATUS_KIND[cls])
    err = await fail(provider(cls, fake))
    assert type(err) is MalformedResponseError
    assert (err.http_status, err.retryable) == (307, False)
    assert err.message == (
        "HTTP 307 redirect to https://login.example.net refused: the SDK never follows "
        "redirects (is base_url right?)"
    )
    assert err.provider_task_id in fake.tasks
    # 300 is the first redirect status: refused the same way, even without a Location.
    fake.inject(Fault.body(b'{"code": 200}', status=300), path=STATUS_KIND[cls])
    first = await fail(provider(cls, fake))
    assert (type(first), first.http_status) == (MalformedResponseError, 300)
    assert first.message.startswith("HTTP 300 redirect refused: ")
    # 400 is past the redirects: the page is read and shown, not refused as a redirect.
    fake.inject(Fault.body(b"<html>400</html>", status=400), path=STATUS_KIND[cls])
    page = await fail(provider(cls, fake))
    assert (type(page), page.http_status) == (MalformedResponseError, 400)
    assert "redirect" not in page.message
    assert page.excerpt == "<html>400</html>"


# -- tasks that fail, and tasks that never finish ------------------------------------------------


async def test_kie_failed_task_is_typed_with_fail_code_and_message(fake: FakeProvider) -> None:
    fake.failing_tasks.add("clip_1")
    err = await fail(provider(KieJobsProvider, fake))
    (task_id,) = fake.tasks
    assert type(err) is GenerationFailedError
    assert err.code == 501
    assert err.provider_task_id == task_id
    assert task_id in str(err)
    assert "generation failed" in err.message
    assert err.retryable is False
    assert not fake.personas


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (b'{"taskId": ""}', "HTTP 200: success without a task id"),
        (
            b"{}",
            "HTTP 200 application/json: reply is not the kie-jobs envelope "
            "(Object missing required field `taskId`)",
        ),
    ],
    ids=["empty-task-id", "no-task-id"],
)
async def test_a_submit_answered_success_without_a_task_id_says_what_was_wrong(
    fake: FakeProvider, data: bytes, said: str
) -> None:
    fake.inject(Fault.body(b'{"code": 200, "msg": "success", "data": %s}' % data), path="kie-jobs")
    err = await fail(provider(KieJobsProvider, fake))
    cause = err.__cause__ if type(err) is OutcomeUnknownError else err
    assert type(cause) is MalformedResponseError
    assert cause.message == said


@pytest.mark.parametrize(("status", "cls"), [(400, PersonaError), (404, NotFoundError)])
async def test_a_status_reply_with_an_error_status_is_that_error_whatever_its_body_says(
    fake: FakeProvider, status: int, cls: type[PersonaError]
) -> None:
    # An HTTP error status around a body that reads as a running task: the status rules.
    fake.inject(Fault.body(_record("", state="generating"), status=status), path="kie-jobs-status")
    err = await fail(provider(KieJobsProvider, fake))
    assert type(err) is cls
    assert (err.code, err.http_status) == (status, status)
    assert len(polls(fake, KieJobsProvider)) == 1


def _failed(fail_code: str, fail_msg: str) -> bytes:
    import msgspec

    data = {"taskId": "x", "state": "fail", "failCode": fail_code, "failMsg": fail_msg}
    return msgspec.json.encode({"code": 200, "msg": "success", "data": data})


@pytest.mark.parametrize(
    ("fail_code", "fail_msg", "cls", "code", "said"),
    [
        ("501", "it broke", GenerationFailedError, 501, " (501): it broke"),
        # The table's class for a code that is not retryable: its own type.
        ("451", "no rights to that song", MusicAccessError, 451, " (451): no rights to that song"),
        # A class that would be retried (500) is not: the task is over.
        ("500", "internal", GenerationFailedError, 500, " (500): internal"),
        ("", "", GenerationFailedError, 501, ""),  # nothing said: nothing added
    ],
    ids=["generation", "music-access", "server-error", "silent"],
)
async def test_a_failed_kie_task_is_typed_by_its_fail_code_and_never_retried(
    fake: FakeProvider,
    fail_code: str,
    fail_msg: str,
    cls: type[PersonaError],
    code: int,
    said: str,
) -> None:
    fake.inject(Fault.body(_failed(fail_code, fail_msg)), path="kie-jobs-status")
    err = await fail(provider(KieJobsProvider, fake), max_retries=3)
    (task_id,) = fake.tasks
    assert type(err) is cls
    assert err.message == f"task {task_id} failed{said}"
    assert (err.code, err.http_status, err.provider) == (code, 200, "kie-jobs")
    assert (err.retryable, err.provider_task_id) == (False, task_id)
    assert len(polls(fake, KieJobsProvider)) == 1  # over at once: never polled again


async def test_evolink_failed_task_keeps_its_string_code(fake: FakeProvider) -> None:
    fake.failing_tasks.add("clip_1")
    err = await fail(provider(EvolinkProvider, fake))
    (task_id,) = fake.tasks
    assert type(err) is GenerationFailedError
    assert "generation_failed" in err.message
    assert err.provider_task_id == task_id
    assert submits(fake, EvolinkProvider) == 1


@pytest.mark.parametrize("cls", ASYNC)
async def test_task_still_running_at_the_deadline_says_its_task_id(
    fake: FakeProvider, cls: type[Provider]
) -> None:
    fake.task_seconds = 60.0
    started = time.monotonic()
    err = await fail(provider(cls, fake), deadline=0.6)
    (task_id,) = fake.tasks
    assert type(err) is ProviderTimeoutError
    # The task's own word for where it is, as its status query last said it.
    word = "generating" if cls is KieJobsProvider else "processing"
    assert err.message.startswith(f"task {task_id} still {word!r} at the request's deadline")
    assert err.provider_task_id == task_id
    assert time.monotonic() - started < 3.0
    assert submits(fake, cls) == 1


@pytest.mark.parametrize("cls", ASYNC)
async def test_unknown_task_is_not_found_with_its_id(
    fake: FakeProvider, cls: type[Provider]
) -> None:
    req = PersonaRequest("t", "c", "n", "d", provider_task_id="no-such-task")
    err = await fail(provider(cls, fake), req)
    assert type(err) is NotFoundError
    assert err.provider_task_id == "no-such-task"
    assert submits(fake, cls) == 0


# -- submit errors -----------------------------------------------------------------------------

KIE_JOBS_CODES = {
    401: AuthenticationError,
    402: InsufficientCreditsError,
    404: NotFoundError,
    422: ValidationError,
    429: RateLimitError,
    433: PersonaError,  # documented, meaning not published: a plain error with its number
    455: MaintenanceError,
    500: ServerError,
    501: GenerationFailedError,
    505: FeatureDisabledError,
}


@pytest.mark.parametrize(("code", "cls"), KIE_JOBS_CODES.items())
async def test_every_kie_jobs_submit_code_raises_its_class(
    fake: FakeProvider, code: int, cls: type[PersonaError]
) -> None:
    retry_after = 60.0 if code == 429 else None
    fake.inject(Fault.envelope(code, retry_after=retry_after), times=50, path="kie-jobs")
    err = await fail(provider(KieJobsProvider, fake), deadline=0.5, max_maintenance_wait=0.05)
    assert type(err) is cls
    assert (err.code, err.http_status) == (code, 200)
    assert not fake.tasks


EVOLINK_STATUSES = {
    400: ValidationError,
    401: AuthenticationError,
    402: InsufficientCreditsError,
    404: NotFoundError,
    429: RateLimitError,
    500: ServerError,
}


@pytest.mark.parametrize(("status", "cls"), EVOLINK_STATUSES.items())
async def test_every_evolink_submit_status_raises_its_class(
    fake: FakeProvider, status: int, cls: type[PersonaError]
) -> None:
    raw = b'{"error": {"code": "invalid_request", "message": "said %d", "type": "x"}}' % status
    fake.inject(Fault.body(raw, status=status), times=50, path="evolink")
    err = await fail(provider(EvolinkProvider, fake), deadline=0.5)
    assert type(err) is cls
    assert err.http_status == status
    assert err.message == f"invalid_request: said {status}"


@pytest.mark.parametrize("cls", ASYNC)
async def test_wrong_key_is_authentication_error(cls: type[Provider]) -> None:
    async with FakeProvider() as fake:
        err = await fail(cls(api_key="wrong", base_url=fake.url, rate_limit=None, poll=FAST))
        assert type(err) is AuthenticationError
        assert not fake.tasks


async def test_a_key_refused_on_a_status_query_stops_the_lane(fake: FakeProvider) -> None:
    fake.task_seconds = 0.3
    fake.inject(Fault.envelope(401), path="kie-jobs-status")
    async with client(provider(KieJobsProvider, fake), max_retries=0) as c:
        with pytest.raises(AuthenticationError) as first:
            await c.create_persona(REQ)
        with pytest.raises(AuthenticationError):
            await c.create_persona(PersonaRequest("t", "clip_2", "n", "d"))
    assert first.value.provider_task_id in fake.tasks
    assert submits(fake, KieJobsProvider) == 1  # the second was never sent


@pytest.mark.parametrize("cls", ASYNC)
async def test_submit_reset_after_the_task_was_made_is_not_resubmitted(
    fake: FakeProvider, cls: type[Provider]
) -> None:
    fake.inject(Fault.reset_after(), path=cls.kind)
    err = await fail(provider(cls, fake), max_retries=3)
    assert type(err) is OutcomeUnknownError
    assert submits(fake, cls) == 1
    assert len(fake.tasks) == 1  # the provider has the task; the caller is told it may exist


async def test_evolink_lost_submit_is_resent_only_when_asked(fake: FakeProvider) -> None:
    fake.inject(Fault.reset_after(), path="evolink")
    async with client(provider(EvolinkProvider, fake, retry_ambiguous=True)) as c:
        persona = await c.create_persona(REQ)
    assert submits(fake, EvolinkProvider) == 2
    assert persona.provider_task_id in fake.tasks


# -- politeness --------------------------------------------------------------------------------


async def test_first_poll_waits_for_the_estimate_then_backs_off(fake: FakeProvider) -> None:
    fake.task_seconds = 0.7
    policy = PollPolicy(initial=0.1, factor=2.0, max_interval=0.4, min_interval=0.05, jitter=0.0)
    async with client(provider(EvolinkProvider, fake, poll=policy)) as c:
        await c.create_persona(REQ)
    submit = next(r.arrived for r in fake.requests if r.kind == "evolink")
    times = polls(fake, EvolinkProvider)
    # Evolink estimates 15 s, capped by the policy's longest gap (0.4 s here).
    assert times[0] - submit >= 0.4 - 0.02
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps
    assert all(g >= 0.1 - 0.02 for g in gaps)
    assert gaps == sorted(gaps) or max(gaps) <= 0.4 + 0.1  # growing up to the cap


async def test_a_task_being_polled_holds_no_create_slot(fake: FakeProvider) -> None:
    fake.task_seconds = 0.6
    p = provider(KieJobsProvider, fake, max_concurrency=1)
    reqs = [PersonaRequest("t", f"clip_{i}", "n", "d") for i in range(3)]
    async with client(p) as c:
        outcomes = [o async for o in c.create_many(reqs)]
    assert all(o.ok for o in outcomes)
    submitted = sorted(r.arrived for r in fake.requests if r.kind == "kie-jobs")
    first_done = min(t.ready_at for t in fake.tasks.values())
    assert len(submitted) == 3
    assert submitted[-1] < first_done  # all three went out while the first was still running


async def test_429_on_polling_slows_polling_not_creates(fake: FakeProvider) -> None:
    import anyio

    fake.task_seconds = 0.4
    fake.inject(Fault.http(429, retry_after=0.6), path="kie-jobs-status")
    p = provider(KieJobsProvider, fake, max_concurrency=1)
    async with client(p) as c, anyio.create_task_group() as tg:
        tg.start_soon(c.create_persona, PersonaRequest("t", "clip_a", "n", "d"))
        while not any(r.http_status == 429 for r in fake.requests):  # noqa: ASYNC110 - the fake has no event
            await anyio.sleep(0.01)
        throttled_at = time.monotonic()
        second = await c.create_persona(PersonaRequest("t", "clip_b", "n", "d"))
    second_submit = [r.arrived for r in fake.requests if r.kind == "kie-jobs"][1]
    after = [t for t in polls(fake, KieJobsProvider) if t > throttled_at]
    assert second.persona_id in fake.personas
    assert second_submit - throttled_at < 0.3  # the create went at once, inside the poll cooldown
    assert after[0] - throttled_at >= 0.6 - 0.1  # every poll of the lane waited the Retry-After


# -- the task id is the state ------------------------------------------------------------------


async def test_on_submitted_hears_the_task_id_before_the_task_ends(fake: FakeProvider) -> None:
    fake.task_seconds = 0.3
    heard: list[tuple[str, str, str]] = []

    def on_submitted(request: PersonaRequest, task_id: str) -> None:
        heard.append((request.audio_id, task_id, fake.tasks[task_id].state(time.monotonic())))

    async with client(provider(KieJobsProvider, fake)) as c:
        outcomes = [o async for o in c.create_many([REQ], on_submitted=on_submitted)]
    (outcome,) = outcomes
    (task_id,) = fake.tasks
    assert heard == [("clip_1", task_id, "running")]
    assert outcome.provider_task_id == task_id
    assert fake.tasks[task_id].polls >= 1


@pytest.mark.parametrize("cls", ASYNC)
async def test_a_request_with_its_task_id_is_polled_never_submitted(
    fake: FakeProvider, cls: type[Provider]
) -> None:
    async with client(provider(cls, fake)) as c:
        first = await c.create_persona(REQ)
    fake.requests.clear()
    resumed = PersonaRequest("task_1", "clip_1", "n", "d", provider_task_id=first.provider_task_id)
    async with client(provider(cls, fake)) as c:
        again = await c.create_persona(resumed)
    assert again.persona_id == first.persona_id
    assert submits(fake, cls) == 0
    assert polls(fake, cls)


async def test_closing_the_client_while_polling_answers_with_the_task_id(
    fake: FakeProvider,
) -> None:
    import anyio

    fake.task_seconds = 30.0
    errors: list[PersonaError] = []

    async def create(c: PersonaClient) -> None:
        try:
            await c.create_persona(REQ)
        except PersonaError as err:
            errors.append(err)

    c = client(provider(KieJobsProvider, fake))
    async with anyio.create_task_group() as tg, c:
        tg.start_soon(create, c)
        with anyio.fail_after(5):
            while not polls(fake, KieJobsProvider):  # noqa: ASYNC110 - the fake has no event
                await anyio.sleep(0.02)
    (task_id,) = fake.tasks
    (err,) = errors
    assert err.provider_task_id == task_id
    assert f"provider_task_id={task_id!r}" in err.message
    assert submits(fake, KieJobsProvider) == 1
