"""The drift client, from its own package ``vigil-client`` (clients/python/), which model
servers install into their environment. Re-exported here so that ``agent.drift.client``
and the agent's own uses (``vigil drift check`` finds the token with it) need no copy."""

from vigil_client import (
    MAX_CLIENT_DROPPED,
    STATE_DIR_ENV,
    TOKEN_ENV,
    TOKEN_FILE_ENV,
    TOKEN_NAME,
    DriftClient,
    TokenLookup,
    default_state_dirs,
    find_token,
)

__all__ = [
    "MAX_CLIENT_DROPPED",
    "STATE_DIR_ENV",
    "TOKEN_ENV",
    "TOKEN_FILE_ENV",
    "TOKEN_NAME",
    "DriftClient",
    "TokenLookup",
    "default_state_dirs",
    "find_token",
]
