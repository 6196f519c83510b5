from __future__ import annotations

import sys
from pathlib import Path

# The controller and Prometheus helpers (rbproc) live with the rollback tests.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "rollback"))
