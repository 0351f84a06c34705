"""The public surface is pinned: adding or removing a name must be a deliberate change here."""

from __future__ import annotations

import importlib.metadata
import types

import persona_async

EXPECTED_ALL = [
    "CODE_TO_EXCEPTION",
    "ApiBoxProvider",
    "ApikleyProvider",
    "AuthenticationError",
    "CrunProvider",
    "FeatureDisabledError",
    "GenerationFailedError",
    "InsufficientCreditsError",
    "InvalidRequestError",
    "KieProvider",
    "LaneState",
    "LaneStats",
    "MaintenanceError",
    "MalformedResponseError",
    "MusicAccessError",
    "NotFoundError",
    "Outcome",
    "OutcomeStream",
    "OutcomeUnknownError",
    "Persona",
    "PersonaClient",
    "PersonaError",
    "PersonaExistsError",
    "PersonaRequest",
    "Provider",
    "ProviderConnectionError",
    "ProviderTimeoutError",
    "RateLimitError",
    "RedisUnavailableError",
    "ServerError",
    "SunoApiProvider",
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
