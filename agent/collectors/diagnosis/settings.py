"""Settings of the diagnosis collector (``--collector.diagnosis.<option>``)."""

from __future__ import annotations

from dataclasses import dataclass

from agent.collectors.diagnosis.thresholds import DEFAULT
from agent.options import SettingError, option


@dataclass(frozen=True)
class DiagnosisSettings:
    interval: float = option(
        5.0,
        "how often the other collectors' latest metrics are read and the verdicts renewed.",
        type="duration",
        minimum=0.1,
    )
    window: float = option(
        60.0,
        "time span that rates and averages are taken over; a verdict needs at least the "
        "minimum window of docs/diagnosis.md, so a shorter one is refused.",
        type="duration",
        minimum=DEFAULT.min_window_seconds,
    )
    max_targets: int = option(
        256,
        "most pods or processes diagnosed per round; the others are counted in "
        "vigil_diagnosis_targets_refused_total.",
        minimum=1,
    )
    model_owners: tuple[str, ...] = option(
        (),
        "MODEL=NAME pairs naming which process serves a drift model (NAME: a pod, "
        "container, comm or pid) where no inference server reports the model itself.",
    )

    def __post_init__(self) -> None:
        if self.window < 2 * self.interval:
            raise SettingError(
                "window",
                f"{self.window:g}s is less than two intervals ({self.interval:g}s each): a "
                "rate needs two snapshots",
            )
        # Checked here too, not only when parsing flags: a settings object built in code
        # with a shorter window would keep every verdict at insufficient_evidence forever.
        if self.window < DEFAULT.min_window_seconds:
            raise SettingError(
                "window",
                f"{self.window:g}s is shorter than the {DEFAULT.min_window_seconds:g}s a "
                "verdict needs: every verdict would stay insufficient_evidence",
            )
        for pair in self.model_owners:
            model, sep, name = pair.partition("=")
            if not sep or not model.strip() or not name.strip():
                raise SettingError("model-owners", f"{pair!r} is not MODEL=NAME")

    def owners(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for pair in self.model_owners:
            model, _, name = pair.partition("=")
            out.setdefault(model.strip(), []).append(name.strip())
        return out
