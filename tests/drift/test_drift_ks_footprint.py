"""The exact two-sample path without `import scipy.stats`: same numbers, less memory."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats._stats_py import _attempt_exact_2kssamp

from agent.collectors.drift import ks

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("n1", "n2"),
    [(1, 1), (1, 7), (5, 5), (50, 50), (20, 30), (2000, 1000), (5000, 10000), (9973, 10000),
     (3, 10000), (10000, 10000)],
)  # fmt: skip
def test_exact_path_equals_scipys_to_the_bit(n1: int, n2: int) -> None:
    kernel = ks._exact_kernel()
    assert kernel is not None, "scipy's compiled exact-KS routine was not found"
    g = math.gcd(n1, n2)
    lcm = (n1 // g) * n2
    # Every kind of D: zero, one step, the body, the tail, the largest possible.
    for h in sorted({0, 1, 2, lcm // 97, lcm // 13, lcm // 3, lcm // 2, lcm - 1, lcm}):
        d = h / lcm
        want = _attempt_exact_2kssamp(n1, n2, g, d, "two-sided")
        got = ks._exact_two_sided(n1, n2, g, d, kernel)
        assert got[0] == want[0] and got[1] == want[1], (n1, n2, h)
        assert got[2] == want[2] or (math.isnan(got[2]) and math.isnan(want[2])), (n1, n2, h)


def test_a_drift_check_on_the_exact_path_does_not_import_scipy_stats() -> None:
    """scipy.stats maps all of scipy into the agent (+64 MiB resident, bench/footprint)."""
    code = (
        "import sys, numpy as np\n"
        "from agent.collectors.drift.ks import ReferenceSample\n"
        "rng = np.random.default_rng(3)\n"
        "ref = ReferenceSample(rng.normal(size=(2000, 2)), ['a', 'b'])\n"
        "res = ref.test(rng.normal(0.2, 1, size=(1000, 2)))\n"
        "assert res.method == 'exact', res.method\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'scipy'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['scipy.stats._stats_pythran']"


def test_decisions_agree_with_scipy_ks_2samp() -> None:
    from scipy.stats import ks_2samp

    rng = np.random.default_rng(11)
    ref = rng.normal(size=(3000, 3))
    window = np.column_stack(
        [rng.normal(0, 1, 700), rng.normal(0.15, 1, 700), rng.normal(0, 1.3, 700)]
    )
    res = ks.ReferenceSample(ref, ["x", "y", "z"]).test(window)
    for j in range(3):
        want = ks_2samp(ref[:, j], window[:, j], method="auto")
        assert res.pvalue[j] == pytest.approx(want.pvalue, rel=1e-12, abs=1e-300)
