"""Settings dataclasses: what option() declares, and what the framework derives from it."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, dataclass

import pytest

from agent.collectors import SPECS
from agent.options import SettingError, build, declared, option
from agent.registry import CollectorSpec


@dataclass(frozen=True)
class Example:
    interval: float = option(5.0, "how often.", type="duration", minimum=0.1)
    top_k: int = option(10, "how many.", minimum=0)
    enabled_extra: bool = option(False, "also the extra.")
    mode: str = option("fast", "which.", choices=("fast", "slow"))
    ratio: float = option(0.5, "a share.", maximum=1.0)
    patterns: tuple[str, ...] = option(("a", "b"), "regexes.")


def test_types_are_inferred_from_the_default_except_duration() -> None:
    fields = {f.key: f for f in declared(Example)}
    assert {k: f.type for k, f in fields.items()} == {
        "interval": "duration",
        "top-k": "int",
        "enabled-extra": "bool",
        "mode": "str",
        "ratio": "float",
        "patterns": "list",
    }
    assert fields["interval"].minimum == 0.1 and fields["ratio"].maximum == 1.0
    assert fields["mode"].choices == ("fast", "slow")
    assert fields["top-k"].help == "how many." and fields["top-k"].default == 10


def test_build_keeps_defaults_and_freezes_lists() -> None:
    s = build(Example, {"top-k": 3, "patterns": ["x"]})
    assert s == Example(top_k=3, patterns=("x",))
    with pytest.raises(FrozenInstanceError):
        s.top_k = 4  # type: ignore[misc]


def test_a_field_without_option_is_refused_when_registered() -> None:
    @dataclass(frozen=True)
    class Sloppy:
        interval: float = 5.0

    with pytest.raises(TypeError, match=r"Sloppy\.interval is not declared with option\(\)"):
        CollectorSpec("sloppy", "s", Sloppy, factory=lambda c, s: None, doctor=lambda s, p: [])


@pytest.mark.parametrize(
    ("default", "kw", "message"),
    [
        ([1], {}, "must be a tuple"),
        (None, {}, "cannot infer"),
        (1, {"type": "number"}, "not one of"),
    ],
)
def test_bad_declarations_fail_at_import(default: object, kw: dict[str, str], message: str) -> None:
    with pytest.raises(TypeError, match=message):
        option(default, "h", **kw)  # type: ignore[arg-type]


def test_setting_error_names_the_option() -> None:
    e = SettingError("alpha", "1 is not below 1")
    assert (e.option, e.why, str(e)) == ("alpha", "1 is not below 1", "alpha: 1 is not below 1")


def test_every_real_default_is_valid() -> None:
    # The defaults alone must pass each collector's own checks across fields.
    for spec in SPECS:
        assert build(spec.settings, {}) == spec.settings()
