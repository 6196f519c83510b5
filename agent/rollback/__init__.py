"""The rollback controller: Alertmanager webhook → policy → journal → action.

`vigil rollback-controller` runs it as its own process (never inside the node agent).
See docs/rollback.md for the loop, the configuration and the guarantees.
"""
