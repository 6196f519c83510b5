"""GPU health and per-process GPU use from NVML.

Not built yet: listed so that it can be switched and reported, exports nothing else.
"""

from __future__ import annotations

from agent.registry import CollectorSpec

SPEC = CollectorSpec(name="gpu", help="GPU health and per-process GPU use from NVML")
