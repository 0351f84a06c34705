"""``RetryPolicy`` is public and passed whole; the old keyword arguments are thin aliases."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

import pytest
from _support import make, req

from persona_async import CrunProvider, PersonaClient, RetryPolicy, ServerError
from persona_async._cli._config import ConfigError, load_config
from persona_async.testing import FakeProvider, Fault

pytestmark = pytest.mark.anyio

QUICK: dict[str, Any] = {"backoff_initial": 0.01, "backoff_max": 0.01}


async def test_a_policy_passed_whole_is_the_one_the_client_resends_by(fake: FakeProvider) -> None:
    fake.inject(Fault.envelope(500), times=100)
    policy = RetryPolicy(max_retries=1, **QUICK)
    async with PersonaClient([make(CrunProvider, fake)], retry=policy) as client:
        with pytest.raises(ServerError) as info:
            await client.create_persona(req(0))
    assert info.value.attempts == 2  # the first attempt and the policy's one resend
    assert fake.request_count == 2


async def test_the_old_keyword_arguments_still_set_the_policy(fake: FakeProvider) -> None:
    fake.inject(Fault.envelope(500), times=100)
    async with PersonaClient([make(CrunProvider, fake)], max_retries=2, **QUICK) as client:
        with pytest.raises(ServerError):
            await client.create_persona(req(0))
    assert fake.request_count == 3


def test_a_policy_and_an_alias_together_are_refused_naming_both() -> None:
    with pytest.raises(TypeError, match=r"retry=RetryPolicy\(\.\.\.\) or as max_retries=, not"):
        PersonaClient([CrunProvider(api_key="k")], retry=RetryPolicy(), max_retries=1)


def test_a_policy_that_is_not_a_retry_policy_is_refused_before_anything_is_sent() -> None:
    wrong: Any = {"max_retries": 1}  # the config file's table, say
    with pytest.raises(TypeError, match="retry must be a RetryPolicy, got dict"):
        PersonaClient([CrunProvider(api_key="k")], retry=wrong)


def test_the_whole_policy_and_its_defaults_show_in_the_signature() -> None:
    default = inspect.signature(PersonaClient).parameters["retry"].default
    assert default == RetryPolicy()
    shown = repr(default)
    for field in dataclasses.fields(RetryPolicy):
        assert f"{field.name}={field.default!r}" in shown


def test_every_alias_is_a_field_of_the_policy() -> None:
    # An alias that is not a field would be a fourth place a setting is declared.
    params = inspect.signature(PersonaClient).parameters
    aliases = {name for name, p in params.items() if p.default is None} - {"deadline", "on_orphan"}
    assert aliases <= {f.name for f in dataclasses.fields(RetryPolicy)}
    assert "retry_budget" in aliases


@pytest.mark.parametrize(
    ("field", "bad", "says"),
    [
        ("max_retries", -1, "max_retries must be >= 0"),
        ("max_retries", 1.5, "max_retries must be an int"),
        ("backoff_initial", float("nan"), "backoff_initial must be >= 0"),
        ("backoff_max", -0.1, "backoff_max must be >= 0"),
        ("retry_after_max", -1.0, "retry_after_max must be >= 0"),
        ("max_maintenance_wait", 0.0, "max_maintenance_wait must be > 0"),
        ("retry_budget", 0, "retry_budget must be >= 1"),
    ],
)
def test_a_bad_value_is_refused_by_field_name(field: str, bad: float, says: str) -> None:
    given: dict[str, Any] = {field: bad}
    with pytest.raises(ValueError, match=says):
        RetryPolicy(**given)
    with pytest.raises(ValueError, match=says):  # the alias goes through the same check
        PersonaClient([CrunProvider(api_key="k")], **given)


# -- the batch config's [client] table ------------------------------------------------------------


def write_config(tmp_path: Path, client: str) -> str:
    path = tmp_path / "persona.toml"
    path.write_text(f'[providers.crun]\nkind = "crun"\n\n[client]\n{client}')
    return str(path)


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(RetryPolicy)])
def test_every_policy_field_is_a_client_key_of_the_batch_config(tmp_path: Path, field: str) -> None:
    # Derived from the policy: a field added to RetryPolicy is a config key with its rule.
    default = getattr(RetryPolicy(), field)
    config = load_config(write_config(tmp_path, f"{field} = {default + 1}\ndeadline = 5.0\n"))
    assert config.client["retry"] == RetryPolicy(**{field: default + 1})
    assert config.client["deadline"] == 5.0
    PersonaClient([CrunProvider(api_key="k")], **config.client)  # what `batch` builds


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(RetryPolicy)])
def test_a_bad_policy_value_in_the_config_is_refused_with_the_policys_rule(
    tmp_path: Path, field: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, f"{field} = -1\n"))
    message = str(info.value)
    assert f"[client] {field}: must be " in message
    said = message.rpartition(": ")[2]  # the rule in words, e.g. "must be >= 0"
    with pytest.raises(ValueError, match=f"{field} {said}"):  # the policy's own words
        RetryPolicy(**{field: -1})
