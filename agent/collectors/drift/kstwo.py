"""The one-sample KS distribution ``scipy.stats.kstwo.sf(D, n)``, vectorised.

ks_2samp's asymptotic p-value is ``kstwo.sf(D, round(n1*n2/(n1+n2)))``, which scipy
evaluates one value at a time in Python and, in its tail, with an O(n) exact sum (5 ms per
value at n = 4,762). Here every value comes with an error bound, so that callers can
recompute exactly the few values whose error matters (see ks.settle): scipy's own
closed forms where they are cheap (error 0), the Pelz-Good series in the body (error
<= 1e-5), and in the tail a large-deviation form (relative error <= 2 %) or Massart's
bound. Pure numpy/scipy.
"""

from __future__ import annotations

import math

import numpy as np

# kstwo switches to exact matrix algorithms at or below this n (Simard & L'Ecuyer 2011);
# there the Pelz-Good series is not accurate enough, so we call kstwo itself.
PELZ_GOOD_MIN_N = 140
# Measured worst error of the Pelz-Good series against kstwo.sf for n > 140 over the
# whole body (n·D² < 2.2) is 3.1e-6 (n = 141); 1e-5 leaves a 3x margin.
PELZ_GOOD_ERROR = 1e-5
# kstwo.sf's own cut-offs on n·D²: above 370 the survival function underflows to 0,
# above 2.2 it is the closed form 2·smirnov(n, D) (Simard & L'Ecuyer 2011, section 3).
_UNDERFLOW_NX2 = 370.0
_SMIRNOV_NX2 = 2.2
# The tail approximation: measured worst relative error against smirnov() over
# n ≥ 1,000 and 2.2 ≤ n·D² ≤ 40 is 0.67 % (n = 1,000), falling as 1/n; 2 % leaves a 3x
# margin. Below n = 1,000 smirnov() is cheap (≤ 1 ms) and is called as is. Beyond
# n·D² = 40 the form drifts (it lacks D⁶ terms) but p < 2·e⁻⁸⁰ there.
TAIL_APPROX_MIN_N = 1000
TAIL_APPROX_ERROR = 0.02
TAIL_APPROX_MAX_NX2 = 40.0

_PI2, _PI4, _PI6 = np.pi**2, np.pi**4, np.pi**6
_SQRT2PI, _SQRT3 = math.sqrt(2 * math.pi), math.sqrt(3.0)


def kstwo_sf(d: np.ndarray, n: float) -> tuple[np.ndarray, np.ndarray]:
    """``scipy.stats.kstwo.sf(d, n)`` for many d at once, and each value's error bound.

    Mirrors scipy's branch choice (``_ksstats._kolmogn``). scipy's tail is the exact
    one-sided sum ``2·smirnov(n, D)``, O(n) per value (5 ms at n = 4,762); here it is
    the large-deviation form ``2·exp(-(6nD+1)²/(18n) - 4nD⁴/9)`` for n ≥ 1,000 (relative
    error below 0.7 %, bound 2 %), and Massart's bound ``2·exp(-2nD²)`` beyond n·D² = 40
    (p < 1e-34). The body for n > 140 is the Pelz-Good series (error ≤ 1e-5). Small n and
    the extreme edges go to scipy itself (error 0).
    """
    d = np.asarray(d, dtype=np.float64)
    p = np.zeros_like(d)
    error = np.zeros_like(d)
    p[d <= 0.5 / n] = 1.0  # at or below the support's lower end
    inside = (d > 0.5 / n) & (d < 1.0)
    t = n * d
    scalar = inside & ((n <= PELZ_GOOD_MIN_N) | (t <= 1.0) | (t >= n - 1))
    if scalar.any():
        p[scalar] = kstwo_sf_exact(d[scalar], n)
    rest = inside & ~scalar
    nx2 = t * d
    tail = rest & ((d >= 0.5) | ((nx2 >= _SMIRNOV_NX2) & (nx2 < _UNDERFLOW_NX2)))
    if n < TAIL_APPROX_MIN_N:
        from scipy.special import smirnov  # lazily: see kstwo_sf_exact

        p[tail] = np.clip(2.0 * smirnov(int(n), d[tail]), 0.0, 1.0)
    else:
        x = d[tail]
        approx = np.clip(
            2.0 * np.exp(-((6 * n * x + 1) ** 2) / (18 * n) - 4.0 / 9.0 * n * x**4), 0.0, 1.0
        )
        p[tail] = approx
        far = nx2[tail] > TAIL_APPROX_MAX_NX2
        # Near: relative bound; far: the p-value lies in [0, Massart's bound].
        error[tail] = np.where(
            far,
            2.0 * np.exp(-2.0 * nx2[tail]),
            approx * TAIL_APPROX_ERROR * (1 + TAIL_APPROX_ERROR),
        )
    body = rest & (d < 0.5) & (nx2 < _SMIRNOV_NX2)
    if body.any():
        p[body] = np.clip(1.0 - pelz_good_cdf(n, d[body]), 0.0, 1.0)
        error[body] = PELZ_GOOD_ERROR
    return p, error


def kstwo_sf_exact(d: np.ndarray, n: float) -> np.ndarray:
    # scipy.stats is imported on first use, not with the module: every `vigil` command
    # imports the collectors, and scipy.stats alone takes ~0.7 s to import.
    from scipy.stats import distributions

    return np.asarray(distributions.kstwo.sf(d, n), dtype=np.float64)


def pelz_good_cdf(n: float, x: np.ndarray) -> np.ndarray:
    """Pelz & Good (1976) series for P(D_n ≤ x), vectorised; as scipy's _kolmogn_PelzGood."""
    z = np.sqrt(n) * np.asarray(x, dtype=np.float64)
    out = np.zeros_like(z)
    live = -_PI2 / 8 / z**2 >= -708  # below z ≈ 0.0417 the CDF underflows to 0 (as scipy)
    if not live.any():
        return out
    z = z[live]
    z2, z3, z4, z6 = z**2, z**3, z**4, z**6
    q = np.exp(-_PI2 / 8 / z2)
    k1a, k1b = -z2, _PI2 / 4
    k2a = 6 * z6 + 2 * z4
    k2b = (2 * z4 - 5 * z2) * _PI2 / 4
    k2c = _PI4 * (1 - 2 * z2) / 16
    k3d = _PI6 * (5 - 30 * z2) / 64
    k3c = _PI4 * (-60 * z2 + 212 * z4) / 16
    k3b = _PI2 * (135 * z4 - 96 * z6) / 4
    k3a = -30 * z6 - 90 * z**8
    k = np.zeros((4, z.size))
    maxk = int(np.ceil(16 * z.max() / np.pi))  # scipy's truncation, for the largest z
    for i in range(maxk, 0, -1):  # Horner over the odd terms, as scipy
        m = 2 * i - 1
        k *= q ** (8 * i)
        k[0] += 1.0
        k[1] += k1a + k1b * m**2
        k[2] += k2a + k2b * m**2 + k2c * m**4
        k[3] += k3a + k3b * m**2 + k3c * m**4 + k3d * m**6
    k *= q * _SQRT2PI
    k /= np.stack([z, 6 * z4, 72 * z**7, 6480 * z**10])
    q2 = np.exp(-_PI2 / 2 / z2)
    ks = np.arange(maxk, 0, -1, dtype=np.float64)[:, None]
    ks2 = ks**2
    qp = q2[None, :] ** ks2
    k[2] += np.sum(ks2 * qp, axis=0) * _PI2 * _SQRT2PI / (-36 * z3)
    k[3] += (
        np.sum((_SQRT3 * z + np.pi * ks) * (_SQRT3 * z - np.pi * ks) * ks2 * qp, axis=0)
        * _PI2
        * _SQRT2PI
        / (216 * z6)
    )
    out[live] = k[0] + k[1] / np.sqrt(n) + k[2] / n + k[3] / n**1.5
    return out
