"""The demo model server follows `current`: a rollback shows in its answers within a second."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from agentproc import ROOT, free_port, http_get
from rbproc import release_dir


def test_demo_server_reloads_when_current_changes(tmp_path: Path) -> None:
    root = release_dir(tmp_path / "rel", ["v1", "v2"])
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "examples" / "model_server.py"),
            "--release-dir",
            str(root),
            "--listen",
            f"127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                _, body = http_get(url + "/", timeout=1)
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
        assert json.loads(body)["version"] == "v2"
        req = urllib.request.Request(
            url + "/predict", data=b'{"rows": [{"x": 1.5}]}', method="POST"
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            assert json.loads(r.read()) == {"version": "v2", "predictions": [3.0]}
        tmp = root / ".current.tmp"
        os.symlink("v1", tmp)
        os.replace(tmp, root / "current")
        switched = time.monotonic()
        while json.loads(http_get(url + "/")[1])["version"] != "v1":
            assert time.monotonic() - switched < 2, "did not reload"
            time.sleep(0.02)
        with urllib.request.urlopen(req, timeout=5) as r:
            assert json.loads(r.read())["predictions"] == [1.5]
    finally:
        proc.terminate()
        proc.wait(5)
    assert b"reloaded: v2 -> v1" in proc.stderr.read()  # type: ignore[union-attr]
