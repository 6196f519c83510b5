"""Python stack profiling with py-spy: the pure parts and the thin shells around them.

``stacks`` parses py-spy's collapsed output and summarises a window; ``render`` turns
stacks into speedscope JSON and SVG flamegraphs; ``pyspy`` finds, runs and reaps py-spy;
``schedule`` holds the CPU budget and the backoff; ``pyroscope`` pushes windows to a
Pyroscope server; ``api`` serves ``/v1/profiles``. The collector that ties them together
is :mod:`agent.collectors.profile`.
"""
