"""Settings of the profile collector (``--collector.profile.<option>``)."""

from __future__ import annotations

from dataclasses import dataclass

from agent.options import SettingError, option


@dataclass(frozen=True)
class ProfileSettings:
    rate: int = option(
        9,
        "samples per second per thread; cost grows linearly with it (see docs/profile.md "
        "for the choice).",
        minimum=1,
    )
    window: float = option(
        10.0,
        "length of one sampling window in whole seconds; py-spy reports only when a window ends.",
        type="duration",
        minimum=1,
    )
    max_concurrent: int = option(
        8,
        "most processes sampled at once (one py-spy child each).",
        minimum=1,
    )
    cpu_budget: float = option(
        0.05,
        "CPU all py-spy children of the node may use, as a fraction of one core; windows "
        "wait while it is spent and the processes take turns.",
        minimum=0.001,
    )
    cpu_budget_per_process: float = option(
        0.01,
        "CPU per watched process, as a fraction of one core; the node's budget is this "
        "times the watched processes, capped at cpu-budget.",
        minimum=0.001,
    )
    top_k: int = option(10, "functions exported per process and kind (self, total).", minimum=0)
    pyspy_path: str = option("", "py-spy binary (default: next to vigil's Python, then PATH).")
    pyroscope_url: str = option(
        "",
        "Pyroscope server to push each window to, e.g. "
        "http://pyroscope:4040; empty disables the push.",
    )
    backoff: float = option(
        60.0,
        "first retry delay for a process py-spy cannot read "
        "(not Python, unsupported version, no permission); doubles up to 32x.",
        type="duration",
        minimum=0.1,
    )

    def __post_init__(self) -> None:
        if self.window != int(self.window):
            raise SettingError(
                "window",
                f"{self.window:g}s is not a whole number of seconds (py-spy records whole "
                "seconds); use e.g. 10s",
            )
