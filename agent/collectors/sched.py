"""CPU scheduling of watched processes from eBPF scheduler tracepoints.

Not built yet: listed so that it can be switched and reported, exports nothing else.
"""

from __future__ import annotations

from agent.registry import CollectorSpec

SPEC = CollectorSpec(name="sched", help="CPU scheduling of watched processes from eBPF scheduler tracepoints")
