"""One setting, declared once: its type, default, bounds and help.

The agent's own settings (agent/config.py) are :class:`Field` values; a collector declares
its settings as a frozen dataclass whose fields come from :func:`option`::

    @dataclass(frozen=True)
    class TinySettings:
        interval: float = option(5.0, "how often the source is read.", type="duration")

The framework derives everything else from that dataclass: the flag
``--collector.tiny.interval``, the variable ``VIGIL_COLLECTOR_TINY_INTERVAL``, the YAML key
``collectors: {tiny: {interval: }}``, the --help line and docs/configuration.md; it builds
the instance from the layered configuration and hands it to the collector's factory and
doctor. A field name's ``_`` is spelled ``-`` in the option name (``top_k`` → ``top-k``).

Checks that span fields go in the dataclass's ``__post_init__`` and raise
:class:`SettingError`; the configuration turns it into a :class:`ConfigError` naming the
key and where its value came from, so ``vigil run`` exits 2 before anything starts.

This module imports nothing from the agent, so the configuration, the registry and every
collector can use it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any, TypeVar

TYPES = ("int", "float", "duration", "bool", "str", "list")
_META = "vigil.option"


class ConfigError(Exception):
    """A setting that cannot be used; the message names the key and what is allowed."""


class SettingError(ValueError):
    """A value a settings dataclass refuses in ``__post_init__`` (``option`` is its name)."""

    def __init__(self, option: str, why: str) -> None:
        super().__init__(f"{option}: {why}")
        self.option = option
        self.why = why


@dataclasses.dataclass(frozen=True)
class Field:
    """One setting: ``key`` is its flat name (``collector.gpu.interval``, ``listen``)."""

    key: str
    type: str  # one of TYPES; drives parsing, --help and the generated reference
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    metavar: str | None = None

    @property
    def env(self) -> str:
        return "VIGIL_" + re.sub(r"[.\-]", "_", self.key).upper()

    @property
    def flag(self) -> str:
        return "--" + self.key


def _infer(default: Any) -> str:
    # bool before int: True is an int to Python, not to a user.
    for kind, t in (("bool", bool), ("int", int), ("float", float), ("str", str)):
        if isinstance(default, t):
            return kind
    if isinstance(default, tuple):
        return "list"
    raise TypeError(f"cannot infer an option type from the default {default!r}; pass type=")


def option(
    default: Any,
    help: str,
    *,
    type: str | None = None,
    choices: tuple[str, ...] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    metavar: str | None = None,
) -> Any:
    """A settings dataclass field; ``type`` is inferred from the default except for
    ``"duration"`` (seconds as a float; flags also take ``500ms``, ``2m``). List defaults
    are tuples, so that the settings stay immutable."""
    if isinstance(default, list):
        raise TypeError("a list default must be a tuple: settings are frozen")
    kind = type or _infer(default)
    if kind not in TYPES:
        raise TypeError(f"option type {kind!r} is not one of {', '.join(TYPES)}")
    meta = Field("", kind, default, help, choices, minimum, maximum, metavar)
    return dataclasses.field(default=default, metadata={_META: meta})


def declared(settings_type: type) -> tuple[Field, ...]:
    """The options of a settings dataclass, keyed by option name (``top-k``)."""
    out = []
    for f in dataclasses.fields(settings_type):
        meta = f.metadata.get(_META)
        if meta is None:
            raise TypeError(f"{settings_type.__name__}.{f.name} is not declared with option()")
        out.append(dataclasses.replace(meta, key=option_name(f.name)))
    return tuple(out)


def option_name(field_name: str) -> str:
    return field_name.replace("_", "-")


S = TypeVar("S")


def build(settings_type: type[S], values: Mapping[str, Any]) -> S:
    """An instance from checked values keyed by option name; absent ones keep their
    default. Raises :class:`SettingError` from the dataclass's own cross-field checks."""
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(settings_type):  # type: ignore[arg-type]
        name = option_name(f.name)
        if name in values:
            value = values[name]
            kwargs[f.name] = tuple(value) if isinstance(value, list) else value
    return settings_type(**kwargs)
