"""The batch config file: TOML, one ``[providers.NAME]`` table per lane, an optional ``[client]``.

::

    [providers.crun]
    kind = "crun"                 # any kind of persona_async._providers.PROVIDER_KINDS
    api_key_env = "CRUN_API_KEY"  # the key is read from this environment variable
    rate_limit = 20               # at most 20 requests ... ("none": learn it, and the window)
    rate_period = 10.0            # ... in any 10-second window

    [client]
    max_retries = 3

The schema is data (``_LANE_KEYS``, ``_CLIENT_KEYS``); every error names the file, the table and
the key, and never echoes a value (a value in the wrong place may be a key).
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .._limiter import SharedLimiter
from .._providers import PROVIDER_KINDS, Provider
from .._providers._base import _check_base_url
from .._retry import FIELD_RULES, RetryPolicy

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

__all__ = ["Config", "ConfigError", "LaneConfig", "load_config"]

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class ConfigError(Exception):
    """The config (or an environment variable it names) is unusable; the CLI exits with 2."""


@dataclass(frozen=True, slots=True)
class _Key:
    """One allowed key: its type (``int``, ``float``, ``bool`` or ``str``) and its rule."""

    kind: type
    rule: Callable[[Any], bool] = lambda value: True
    says: str = ""  # the rule in words, for the error message
    none: str | None = None  # a string that stands for None (no value), if any


def _base_url_ok(url: str) -> bool:
    try:
        _check_base_url(url, "base_url")
    except ValueError:
        return False
    return True


_POSITIVE = _Key(float, lambda v: v > 0, "must be > 0")
_NON_NEGATIVE = _Key(float, lambda v: v >= 0, "must be >= 0")

_LANE_KEYS: Mapping[str, _Key] = MappingProxyType(
    {
        "kind": _Key(
            str, lambda v: v in PROVIDER_KINDS, "must be one of " + ", ".join(PROVIDER_KINDS)
        ),
        "api_key_env": _Key(
            str,
            lambda v: _ENV_NAME.match(v) is not None,
            "must be the name of an environment variable (like CRUN_API_KEY), not the key",
        ),
        "base_url": _Key(
            str,
            _base_url_ok,
            "must be an https:// URL with a host (plain http:// only for a loopback host such as "
            "127.0.0.1) and no credentials, query or fragment",
        ),
        # "none": no limit; without a rate_period too, the lane measures the provider's window.
        "rate_limit": _Key(int, lambda v: v >= 1, 'must be >= 1 (or "none")', none="none"),
        "rate_period": _POSITIVE,
        "max_concurrency": _Key(int, lambda v: v >= 1, "must be >= 1"),
        "timeout": _POSITIVE,
        "connect_timeout": _POSITIVE,
        "retry_ambiguous": _Key(bool),
        "wait_for_source": _POSITIVE,  # seconds to wait for the source song before creating
        "limiter": _Key(
            str,
            lambda v: v.startswith(("redis://", "rediss://", "unix://")),
            "must be a redis://, rediss:// or unix:// URL (a limiter shared across processes)",
        ),
    }
)

#: ``[client]``: every ``RetryPolicy`` field, with the policy's own rule (so a new field is a new
#: key, checked as the policy checks it), and the client's ``deadline``.
_CLIENT_KEYS: Mapping[str, _Key] = MappingProxyType(
    {
        **{
            f.name: _Key(type(f.default), *FIELD_RULES[f.name])
            for f in dataclasses.fields(RetryPolicy)
        },
        "deadline": _POSITIVE,
    }
)


def _client_options(checked: Mapping[str, Any]) -> dict[str, Any]:
    """``PersonaClient`` keyword arguments from a checked ``[client]`` table: the policy whole."""
    policy = {key: value for key, value in checked.items() if key in FIELD_RULES}
    rest = {key: value for key, value in checked.items() if key not in FIELD_RULES}
    return {**rest, "retry": RetryPolicy(**policy)} if policy else rest


_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
# What a wrong value is, in words (a float where a whole number is expected must say so).
_GOT_WORDS = {int: "an integer", float: "a number with a fraction", bool: "true or false",
              str: "a string", list: "an array", dict: "a table"}  # fmt: skip
_SECRET_KEYS = frozenset({"api_key", "key", "token", "secret", "password"})


@dataclass(frozen=True, slots=True)
class LaneConfig:
    """One ``[providers.NAME]`` table; ``options`` are the provider's keyword arguments."""

    name: str
    kind: str
    api_key_env: str
    options: Mapping[str, Any]
    limiter_url: str | None = field(default=None, repr=False)  # may hold a Redis password

    def build(self, *, api_key: str, limiter: SharedLimiter | None = None) -> Provider:
        cls = PROVIDER_KINDS[self.kind]
        return cls(api_key=api_key, name=self.name, limiter=limiter, **self.options)


@dataclass(frozen=True, slots=True)
class Config:
    """A loaded config file: its lanes in file order and the client's keyword arguments."""

    path: str
    lanes: tuple[LaneConfig, ...]
    client: Mapping[str, Any]

    def api_keys(self) -> dict[str, str]:
        """Lane name -> key, from the environment; ``ConfigError`` naming what is missing."""
        keys = {}
        for lane in self.lanes:
            key = os.environ.get(lane.api_key_env, "")
            if not key:
                raise ConfigError(
                    f"{self.path}: [providers.{lane.name}] api_key_env: the environment "
                    f"variable {lane.api_key_env} is not set (or empty)"
                )
            keys[lane.name] = key
        return keys

    def shared_limiters(self) -> dict[str, SharedLimiter]:
        """Lane name -> its Redis limiter, for lanes whose table sets ``limiter``."""
        shared: dict[str, SharedLimiter] = {}
        for lane in self.lanes:
            if lane.limiter_url is None:
                continue
            try:
                from ..redis import RedisLimiter
            except ImportError:
                raise ConfigError(
                    f"{self.path}: [providers.{lane.name}] limiter: needs the redis extra: "
                    "pip install 'persona-async[redis]'"
                ) from None
            try:
                shared[lane.name] = RedisLimiter(lane.limiter_url)
            except ValueError as exc:
                raise ConfigError(f"{self.path}: [providers.{lane.name}] limiter: {exc}") from None
        return shared

    def providers(
        self, keys: Mapping[str, str], *, limiter: SharedLimiter | None = None
    ) -> list[Provider]:
        """One provider per lane; a value the provider refuses is a ``ConfigError``."""
        built = []
        for lane in self.lanes:
            try:
                built.append(lane.build(api_key=keys[lane.name], limiter=limiter))
            except ValueError as exc:
                raise ConfigError(f"{self.path}: [providers.{lane.name}]: {exc}") from None
        return built


def load_config(path: str) -> Config:
    """Read and check ``path``; raise ``ConfigError`` with the file, table and key at fault."""
    try:
        with open(path, "rb") as file:
            data: dict[str, Any] = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for key in data:
        if key not in ("providers", "client"):
            raise ConfigError(
                f"{path}: unknown top-level key {key!r}; allowed: [providers.NAME], [client]"
            )
    providers = data.get("providers")
    if not isinstance(providers, dict) or not providers:
        raise ConfigError(f"{path}: no [providers.NAME] table; add one per provider lane")
    lanes = []
    for name, table in providers.items():
        where = f"{path}: [providers.{name}]"
        if not name.strip():
            raise ConfigError(f'{path}: [providers."{name}"]: a lane needs a name')
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: must be a table")
        lanes.append(_lane(where, name, table))
    client = data.get("client", {})
    if not isinstance(client, dict):
        raise ConfigError(f"{path}: [client] must be a table")
    return Config(
        path=path,
        lanes=tuple(lanes),
        client=MappingProxyType(
            _client_options(_checked(f"{path}: [client]", client, _CLIENT_KEYS))
        ),
    )


def _lane(where: str, name: str, table: dict[str, Any]) -> LaneConfig:
    for key in table:
        if key.lower() in _SECRET_KEYS:
            raise ConfigError(
                f"{where} {key}: API keys are not written in the config file; put the key in "
                f"an environment variable and name it with api_key_env = \"...\""
            )
    options = _checked(where, table, _LANE_KEYS)
    if "kind" not in options:
        raise ConfigError(f"{where} kind: missing; one of {', '.join(PROVIDER_KINDS)}")
    kind = options.pop("kind")
    env = options.pop("api_key_env", PROVIDER_KINDS[kind].api_key_env)
    limiter_url = options.pop("limiter", None)
    return LaneConfig(
        name=name,
        kind=kind,
        api_key_env=env,
        options=MappingProxyType(options),
        limiter_url=limiter_url,
    )


def _checked(where: str, table: Mapping[str, Any], schema: Mapping[str, _Key]) -> dict[str, Any]:
    checked: dict[str, Any] = {}
    for key, value in table.items():
        spec = schema.get(key)
        if spec is None:
            raise ConfigError(f"{where} {key}: unknown key; allowed: {', '.join(schema)}")
        if spec.none is not None and value == spec.none:
            checked[key] = None
            continue
        if not _is(value, spec.kind):
            got = _GOT_WORDS.get(type(value), f"a {type(value).__name__}")
            expected = _TYPE_WORDS[spec.kind] + (f' or "{spec.none}"' if spec.none else "")
            raise ConfigError(f"{where} {key}: expected {expected}, got {got}")
        value = float(value) if spec.kind is float else value
        if not spec.rule(value):
            raise ConfigError(f"{where} {key}: {spec.says}")
        checked[key] = value
    return checked


def _is(value: object, kind: type) -> bool:
    if isinstance(value, bool):  # TOML's true is not the integer 1
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)
