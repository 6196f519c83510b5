"""Python stack sampling of watched processes with py-spy.

Not built yet: listed so that it can be switched and reported, exports nothing else.
"""

from __future__ import annotations

from agent.registry import CollectorSpec

SPEC = CollectorSpec(name="profile", help="Python stack sampling of watched processes with py-spy")
