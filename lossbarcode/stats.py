"""Rank-correlation tests that stay honest for a handful of minima.

A run has a few minima (K = 4 .. 64), so the asymptotic p-value of ``scipy.stats.spearmanr`` is
wrong where it matters most (it says ``p = 0`` for n = 3, ρ = −1, where only 1 in 3 orderings is
as extreme). Here every p-value comes from the permutation null of Spearman's ρ:

* **exact**: every permutation is enumerated when there are at most :data:`EXACT_LIMIT` of them
  (n ≤ 8 for one sample);
* **monte carlo**: otherwise :data:`N_PERMUTATIONS` random permutations drawn with the fixed
  seed :data:`SEED` (same data, same p), and p = (count + 1) / (N + 1), so p is never 0.

Both are two-sided exactly as ``scipy.stats.permutation_test`` (``permutation_type='pairings'``)
computes them: ``min(1, 2 min(P(T ≤ t), P(T ≥ t)))``, null values within round-off of the
observed one counting as equal to it.

:func:`stratified_spearman` tests within groups (runs): a ρ per group and one combined statistic,
the n-weighted mean of the within-group ρ, whose null permutes only within each group. Pooling
runs of different widths mixes between-run differences (width drives both segment length and
error: Simpson's paradox); the within-group test does not.

Pure numpy/scipy; no torch, no streamlit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from itertools import permutations
from typing import Any

import numpy as np
from scipy.stats import rankdata

EXACT_LIMIT = math.factorial(8)  # enumerate up to this many permutations, else sample
N_PERMUTATIONS = 9_999
SEED = 0
MIN_N = 3  # fewer pairs have no meaningful rank correlation
_BATCH = 1_000  # Monte Carlo permutations drawn at a time (memory: batch x n indices)
# Null values this close to the observed one count as equal to it (round-off of the same rho):
# distinct values of one rho are at least ~1/n^3 apart, far more for any K here.
_ATOL = 1e-12


@dataclass(frozen=True)
class SpearmanTest:
    """One permutation test of Spearman's ρ.

    Attributes:
        rho: the statistic (Spearman's ρ; for :attr:`StratifiedSpearman.combined` the
            n-weighted mean of within-group ρ); None when undefined (see ``reason``).
        p_value: two-sided permutation p-value; None when undefined.
        n: number of (x, y) pairs used (both finite).
        method: ``"exact"`` (all permutations), ``"monte carlo"`` (``n_permutations`` random
            ones, seed :data:`SEED`) or ``"undefined"``.
        n_permutations: size of the null distribution (``n!`` when exact; 0 when undefined).
        n_extreme: null values at least as extreme as ``rho`` on the rarer side (without the
            Monte Carlo ``+1``); 0 means none was found.
        reason: why the test is undefined (empty otherwise).
    """

    rho: float | None
    p_value: float | None
    n: int
    method: str
    n_permutations: int
    n_extreme: int = 0
    reason: str = ""

    def p_text(self) -> str:
        """The p-value for a reader: ``"0.333"``; ``"≤ 0.0002"`` for a Monte Carlo test that
        found no permutation as extreme (the bound it supports; never ``"0"``)."""
        if self.p_value is None:
            return "—"
        if self.method == "monte carlo" and self.n_extreme == 0:
            return f"≤ {self.p_value:.2g}"
        return f"{self.p_value:.3g}"

    def describe(self) -> str:
        """How the p-value was made, in one line."""
        if self.method == "exact":
            return (f"exact permutation test: all {self.n_permutations:,} permutations "
                    f"of n = {self.n}, two-sided")
        if self.method == "monte carlo":
            none = (f"; none of the {self.n_permutations:,} was as extreme, so p ≤ "
                    f"2 / ({self.n_permutations:,} + 1)" if self.n_extreme == 0 else "")
            return (f"Monte Carlo permutation test: {self.n_permutations:,} random "
                    f"permutations (seed {SEED}) of n = {self.n}, two-sided{none}")
        return f"undefined: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StratifiedSpearman:
    """Spearman's ρ within groups, and their combination.

    Attributes:
        groups: ``label -> SpearmanTest`` of that group alone, in the order given.
        combined: the n-weighted mean of ρ over the groups where ρ is defined, tested by
            permuting y only within each of those groups; ``n`` counts their pairs.
        used: labels of the groups in ``combined`` (the others have ρ undefined).
    """

    groups: dict[str, SpearmanTest]
    combined: SpearmanTest
    used: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"groups": {k: t.to_dict() for k, t in self.groups.items()},
                "combined": self.combined.to_dict(), "used": list(self.used)}


@dataclass(frozen=True)
class _Sample:
    """One group's finite pairs as standardised ranks: ``rho = zx @ zy[perm]`` for any
    permutation ``perm``; ``zx``, ``zy`` shape ``(n,)``."""

    zx: np.ndarray
    zy: np.ndarray

    @property
    def n(self) -> int:
        return int(self.zx.size)

    def null(self, perms: np.ndarray) -> np.ndarray:
        """``(m,)`` ρ under each row of ``perms`` ``(m, n)``."""
        return self.zy[perms] @ self.zx


def _finite_pairs(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"x and y must pair up: got {x.size} and {y.size} values")
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok]


def _standard_ranks(v: np.ndarray) -> np.ndarray:
    r = rankdata(v)  # average ranks for ties, as spearmanr
    r -= r.mean()
    return r / np.linalg.norm(r)


def _sample(x: np.ndarray, y: np.ndarray) -> _Sample | str:
    """The group's :class:`_Sample`, or why its ρ is undefined."""
    if x.size < MIN_N:
        return f"{x.size} finite pairs; a rank correlation needs at least {MIN_N}"
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return "x or y is constant: ρ is undefined"
    return _Sample(_standard_ranks(x), _standard_ranks(y))


def _undefined(n: int, reason: str) -> SpearmanTest:
    return SpearmanTest(None, None, n, "undefined", 0, 0, reason)


def _test(samples: list[_Sample], weights: np.ndarray) -> SpearmanTest:
    """Permutation test of ``sum_g weights[g] * rho_g`` with y permuted within each sample."""
    observed = float(sum(w * s.zx @ s.zy for w, s in zip(weights, samples, strict=True)))
    total = math.prod(math.factorial(s.n) for s in samples)
    if total <= EXACT_LIMIT:
        null = np.zeros(1)
        for w, s in zip(weights, samples, strict=True):  # every joint permutation
            own = w * s.null(np.array(list(permutations(range(s.n)))))
            null = (null[:, None] + own[None, :]).reshape(-1)
        method, count, adjustment = "exact", null.size, 0
    else:
        rng = np.random.default_rng(SEED)
        null = np.zeros(N_PERMUTATIONS)
        for start in range(0, N_PERMUTATIONS, _BATCH):
            m = min(_BATCH, N_PERMUTATIONS - start)
            for w, s in zip(weights, samples, strict=True):
                perms = rng.permuted(np.tile(np.arange(s.n), (m, 1)), axis=1)
                null[start:start + m] += w * s.null(perms)
        method, count, adjustment = "monte carlo", N_PERMUTATIONS, 1
    extreme = min(int(np.count_nonzero(null <= observed + _ATOL)),
                  int(np.count_nonzero(null >= observed - _ATOL)))
    p = min(1.0, 2 * (extreme + adjustment) / (count + adjustment))
    n = sum(s.n for s in samples)
    return SpearmanTest(observed, p, n, method, count, extreme)


def spearman_test(x: Any, y: Any) -> SpearmanTest:
    """Spearman's ρ of ``x`` vs ``y`` (paired, shape ``(n,)``) over the pairs where both are
    finite, with its exact or Monte Carlo permutation p-value (module docstring)."""
    x, y = _finite_pairs(x, y)
    sample = _sample(x, y)
    if isinstance(sample, str):
        return _undefined(x.size, sample)
    return _test([sample], np.ones(1))


def stratified_spearman(groups: Mapping[str, tuple[Any, Any]]) -> StratifiedSpearman:
    """Within-group Spearman tests of ``label -> (x, y)`` (paired ``(n_g,)`` arrays) and one
    combined test: the n-weighted mean of the defined within-group ρ, its p-value from
    permuting y only within groups (so differences between groups cannot make it)."""
    per_group, samples, used = {}, [], []
    for label, (x, y) in groups.items():
        x, y = _finite_pairs(x, y)
        sample = _sample(x, y)
        if isinstance(sample, str):
            per_group[label] = _undefined(x.size, sample)
            continue
        per_group[label] = _test([sample], np.ones(1))
        samples.append(sample)
        used.append(label)
    if not samples:
        n = sum(t.n for t in per_group.values())
        combined = _undefined(n, f"no group has ρ defined (each needs {MIN_N}+ varied pairs)")
    else:
        sizes = np.array([s.n for s in samples], dtype=np.float64)
        combined = _test(samples, sizes / sizes.sum())
    return StratifiedSpearman(per_group, combined, tuple(used))
