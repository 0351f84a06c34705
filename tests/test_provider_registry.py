"""The one provider registry (``PROVIDER_KINDS``) against what users read and type: the
environment variables, the README's opening paragraph, ``persona-async --help``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import persona_async
from persona_async import KieJobsProvider, PersonaClient, PersonaRequest, PollPolicy, Provider
from persona_async._providers import PROVIDER_KINDS
from persona_async.testing import FakeProvider

README = Path(__file__).resolve().parent.parent / "README.md"
#: kie's two routes share the kie account's key.
SHARED_KEYS = {"kie-jobs": "KIE_API_KEY"}


def test_every_public_provider_class_is_registered() -> None:
    public = {
        getattr(persona_async, name)
        for name in persona_async.__all__
        if name.endswith("Provider") and getattr(persona_async, name) is not Provider
    }
    assert public == set(PROVIDER_KINDS.values())


@pytest.mark.parametrize("kind", sorted(PROVIDER_KINDS))
def test_every_variable_is_named_for_the_kind_in_a_shells_spelling(kind: str) -> None:
    cls = PROVIDER_KINDS[kind]
    prefix = kind.upper().replace("-", "_")
    assert cls.env_prefix() == prefix
    assert cls.api_key_env == SHARED_KEYS.get(kind, f"{prefix}_API_KEY")
    assert cls.api_key_env.replace("_", "").isalnum()


@pytest.mark.anyio
async def test_kie_jobs_reads_its_base_url_from_kie_jobs_base_url(
    fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KIE_JOBS_BASE_URL", fake.url)
    provider = KieJobsProvider(
        api_key=fake.api_key,
        rate_limit=None,
        poll=PollPolicy(initial=0.05, min_interval=0.0, max_interval=0.05),
    )
    assert provider.base_url == fake.url
    async with PersonaClient([provider]) as client:
        persona = await client.create_persona(PersonaRequest("task_1", "clip_1", "n", "d"))
    assert persona.persona_id in fake.personas


def test_the_readme_opening_names_every_kind() -> None:
    opening = README.read_text(encoding="utf-8").split("\n\n")[1]
    for kind in PROVIDER_KINDS:
        assert f"`{kind}`" in opening, kind


def test_help_names_every_kind_and_how_much_of_it_is_documented() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "persona_async", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    text = " ".join(done.stdout.split())
    for kind, cls in PROVIDER_KINDS.items():
        assert f"{kind} ({cls.documentation})" in text, kind


@pytest.mark.anyio
@pytest.mark.parametrize("kind", sorted(PROVIDER_KINDS))
async def test_the_fake_speaks_every_registered_kind(fake: FakeProvider, kind: str) -> None:
    from persona_async.testing._fake._registry import FOR_KIND

    cls = PROVIDER_KINDS[kind]
    provider = cls(
        api_key=fake.api_key,
        base_url=fake.url,
        rate_limit=None,
        poll=PollPolicy(initial=0.05, min_interval=0.0, max_interval=0.05),
    )
    async with PersonaClient([provider]) as client:
        persona = await client.create_persona(PersonaRequest("task_1", "clip_1", "n", "d"))
    assert persona.persona_id in fake.personas
    assert fake.requests[0].path == cls.path == FOR_KIND[kind].path
