"""The `vigil drift` command line (cli.py) and the client model servers import (client.py).

The drift collector itself is :mod:`agent.collectors.drift`. client.py imports nothing else
of Vigil, so a model server can take it without the agent's dependencies.
"""
