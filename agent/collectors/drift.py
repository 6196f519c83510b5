"""Input-drift detection with two-sample KS tests.

Not built yet: listed so that it can be switched and reported, exports nothing else.
"""

from __future__ import annotations

from agent.registry import CollectorSpec

SPEC = CollectorSpec(name="drift", help="input-drift detection with two-sample KS tests")
