"""The public surface is pinned: adding or removing a name must be a deliberate change here."""

from __future__ import annotations

import importlib.metadata
import types

import persona_async

EXPECTED_ALL = [
    "CODE_TO_EXCEPTION",
    "AceDataProvider",
    "ApiBoxProvider",
    "ApikleyProvider",
    "AuthenticationError",
    "CometApiProvider",
    "Created",
    "CrunProvider",
    "DeerApiProvider",
    "EvolinkProvider",
    "Failed",
    "FeatureDisabledError",
    "GenerationFailedError",
    "InsufficientCreditsError",
    "InvalidRequestError",
    "KieJobsProvider",
    "KieProvider",
    "LaneState",
    "LaneStats",
    "MaintenanceError",
    "MalformedResponseError",
    "MountSeaProvider",
    "MusicAccessError",
    "NotFoundError",
    "Outcome",
    "OutcomeStream",
    "OutcomeUnknownError",
    "OverloadedError",
    "Persona",
    "PersonaClient",
    "PersonaError",
    "PersonaExistsError",
    "PersonaRequest",
    "PollPolicy",
    "Provider",
    "ProviderConnectionError",
    "ProviderTimeoutError",
    "RateLimitError",
    "RedisUnavailableError",
    "RetryPolicy",
    "ServerError",
    "SourceFailedError",
    "SourceNotReadyError",
    "SunoApiProvider",
    "TtapiProvider",
    "ValidationError",
    "__version__",
]

def _isort_key(name: str) -> tuple[int, str]:
    # isort-style (ruff RUF022): CONSTANTS, then Classes, then everything else, each A-Z.
    if name.isupper():
        return (0, name)
    if name[:1].isupper():
        return (1, name)
    return (2, name)


def test_all_is_exactly_the_pinned_list_sorted_without_duplicates() -> None:
    assert persona_async.__all__ == EXPECTED_ALL
    assert sorted(set(EXPECTED_ALL), key=_isort_key) == EXPECTED_ALL


def test_every_exported_name_is_importable() -> None:
    namespace: dict[str, object] = {}
    exec("from persona_async import *", namespace)
    for name in persona_async.__all__:
        assert getattr(persona_async, name) is namespace[name], name


def test_every_public_attribute_is_exported() -> None:
    public = {
        name
        for name, value in vars(persona_async).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public | {"__version__"} == set(persona_async.__all__)


def test_version_matches_the_installed_distribution() -> None:
    assert persona_async.__version__ == importlib.metadata.version("persona-async")


def test_issue_11_config_kinds_are_pinned() -> None:
    from persona_async._providers import PROVIDER_KINDS

    pinned = {
        "kie-jobs": ("KieJobsProvider", "KIE_API_KEY"),
        "evolink": ("EvolinkProvider", "EVOLINK_API_KEY"),
        "acedata": ("AceDataProvider", "ACEDATA_API_KEY"),
        "cometapi": ("CometApiProvider", "COMETAPI_API_KEY"),
        "deerapi": ("DeerApiProvider", "DEERAPI_API_KEY"),
        "ttapi": ("TtapiProvider", "TTAPI_API_KEY"),
        "mountsea": ("MountSeaProvider", "MOUNTSEA_API_KEY"),
    }
    for kind, (name, env) in pinned.items():
        cls = PROVIDER_KINDS[kind]
        assert cls is getattr(persona_async, name)
        assert (cls.kind, cls.api_key_env) == (kind, env)
