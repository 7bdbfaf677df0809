"""Confidence for TO-scores and their trends, not only their spread.

A scale (architecture, width, depth) has a few runs (seeds), each with K minima. Two kinds of
chance make its TO-score: which seed a run had, and which minima its K trainings fell into.
The **hierarchical bootstrap** here resamples both, in the spirit of Fasy et al. (2014,
"Confidence sets for persistence diagrams"), which resample the points a diagram is built from:

1. draw the scale's runs with replacement;
2. within each drawn run, draw its finite bars with replacement (the bars are the minima's
   segments, so this draws minima) and take the TO-score norm of the draw; a range-normalised
   variant divides by the run's own loss range;
3. the replicate is the mean over the drawn runs.

The interval is the percentile interval of :data:`N_BOOTSTRAP` replicates (seed :data:`SEED`:
same data, same interval). Deaths are kept as found: a bar's length is not recomputed without
the minima left out of a draw, so the interval measures how the score depends on which minima
and seeds were drawn, not how well each path was optimised (that is the restart spread of the
bars, :meth:`lossbarcode.experiment.Result.bar_spread`).

A **trend** along width or depth is Spearman's ρ between the axis and the scale means. Each
bootstrap replicate gives a ρ (every scale redrawn independently); the trend counts only when
the interval of ρ excludes 0: ``"decreasing"`` or ``"increasing"``, else ``"not resolved"``.
A bar no longer than the paths' resolution (``path_atol``) is not resolved from zero, so for a
trend it counts as 0: an order among scores below the resolution floor is the optimiser's, not
the network's.

Pure numpy; no torch, no streamlit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata

from lossbarcode import topology
from lossbarcode.config import parse_score_variant

LEVEL = 0.95
N_BOOTSTRAP = 2_000
SEED = 0
TREND_VERDICTS = ("decreasing", "increasing", "not resolved", "not testable")


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval.

    Attributes:
        estimate: the statistic on the data as found.
        low, high: the interval's ends (``low <= high``); None when it is undefined.
        level: its nominal coverage (e.g. 0.95).
        method: how it was made, in words.
        n: how many units it rests on (runs, or scales for a trend).
    """

    estimate: float | None
    low: float | None
    high: float | None
    level: float
    method: str
    n: int

    def text(self, fmt: str = ".3g") -> str:
        """``"0.12 [0.05, 0.2]"``; ``"—"`` when there is no estimate."""
        if self.estimate is None:
            return "—"
        if self.low is None or self.high is None:
            return f"{self.estimate:{fmt}} [interval undefined]"
        return f"{self.estimate:{fmt}} [{self.low:{fmt}}, {self.high:{fmt}}]"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Trend:
    """A TO-score trend along one axis.

    Attributes:
        axis: ``"width"`` or ``"depth"``.
        values: the axis values of the scales, ascending, shape ``(S,)``.
        means: the scales' mean TO-scores, shape ``(S,)``.
        rho: Spearman's ρ of axis vs mean, with its bootstrap interval.
        verdict: one of :data:`TREND_VERDICTS`.
        reason: why, in words.
    """

    axis: str
    values: tuple[int, ...]
    means: tuple[float, ...]
    rho: Interval
    verdict: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rho": self.rho.to_dict()}


def run_lengths(barcode: topology.Barcode, resolution: float = 0.0) -> np.ndarray:
    """``(n,)`` the finite segment lengths a TO-score is a norm of; those at most
    ``resolution`` as 0."""
    return topology.resolved_lengths(barcode.lengths()[np.isfinite(barcode.deaths)],
                                     resolution)


def run_score(barcode: topology.Barcode, variant: str = "l2", resolution: float = 0.0
              ) -> float:
    """The TO-score of ``barcode`` in ``variant`` (e.g. ``"l2"``, ``"sum_range"``), bars at
    most ``resolution`` long counting as 0."""
    norm, normalize = parse_score_variant(variant)
    lengths = run_lengths(barcode, resolution)
    span = topology.loss_range(barcode) if normalize else 1.0
    if lengths.size == 0 or span <= 0:
        return 0.0
    return topology.length_norm(lengths, norm) / span


def _run_replicates(barcode: topology.Barcode, variant: str, draws: int,
                    rng: np.random.Generator, resolution: float) -> np.ndarray:
    """``(draws,)`` TO-scores of ``barcode`` with its finite bars drawn with replacement."""
    norm, normalize = parse_score_variant(variant)
    lengths = run_lengths(barcode, resolution)
    span = topology.loss_range(barcode) if normalize else 1.0
    if lengths.size == 0 or span <= 0:
        return np.zeros(draws)
    drawn = lengths[rng.integers(0, lengths.size, size=(draws, lengths.size))]
    return topology.length_norm(drawn, norm) / span


def scale_replicates(barcodes: Sequence[topology.Barcode], variant: str = "l2",
                     n_bootstrap: int = N_BOOTSTRAP,
                     rng: np.random.Generator | None = None,
                     resolution: float = 0.0) -> np.ndarray:
    """``(n_bootstrap,)`` hierarchical bootstrap replicates of a scale's mean TO-score over
    its runs' ``barcodes`` (module docstring; bars at most ``resolution`` long count 0)."""
    if not barcodes:
        raise ValueError("a scale needs at least one run to bootstrap")
    rng = np.random.default_rng(SEED) if rng is None else rng
    n, cols = len(barcodes), np.arange(n_bootstrap)
    total = np.zeros(n_bootstrap)
    for _ in range(n):  # each slot of a replicate: a run drawn, then its minima drawn afresh
        per_run = np.stack([_run_replicates(b, variant, n_bootstrap, rng, resolution)
                            for b in barcodes])
        total += per_run[rng.integers(0, n, size=n_bootstrap), cols]
    return total / n


def _percentiles(replicates: np.ndarray, level: float) -> tuple[float, float]:
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return float(low), float(high)


def scale_interval(barcodes: Sequence[topology.Barcode], variant: str = "l2",
                   level: float = LEVEL, n_bootstrap: int = N_BOOTSTRAP) -> Interval:
    """The mean TO-score of a scale's runs with its hierarchical bootstrap interval."""
    estimate = float(np.mean([run_score(b, variant) for b in barcodes]))
    low, high = _percentiles(scale_replicates(barcodes, variant, n_bootstrap), level)
    return Interval(estimate, min(low, estimate), max(high, estimate), level,
                    f"hierarchical bootstrap over seeds and minima ({n_bootstrap:,} draws, "
                    f"seed {SEED})", len(barcodes))


def seed_interval(scores: Sequence[float], level: float = LEVEL) -> Interval:
    """Student-t interval of the mean of per-seed ``scores`` ``(n,)`` (undefined for n < 2)."""
    from scipy.stats import t

    x = np.asarray(scores, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return Interval(None, None, None, level, "t interval over seeds", 0)
    mean = float(x.mean())
    if x.size < 2:
        return Interval(mean, None, None, level, "t interval over seeds: one seed", 1)
    half = float(t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))
    return Interval(mean, mean - half, mean + half, level, "t interval over seeds", int(x.size))


def _spearman_rows(x: np.ndarray, means: np.ndarray) -> np.ndarray:
    """Spearman's ρ of ``x`` ``(S,)`` against each row of ``means`` ``(B, S)``; NaN where a row
    is constant."""
    rx = rankdata(x)
    rx = (rx - rx.mean()) / np.linalg.norm(rx - rx.mean())
    ry = rankdata(means, axis=1)
    ry = ry - ry.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(ry, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, (ry @ rx) / np.where(norm > 0, norm, 1.0), np.nan)


def trend(axis: str, scales: dict[int, Sequence[topology.Barcode]], variant: str = "l2",
          level: float = LEVEL, n_bootstrap: int = N_BOOTSTRAP, resolution: float = 0.0
          ) -> Trend:
    """The TO-score trend along ``axis`` of ``scales`` (axis value -> that scale's runs'
    barcodes): Spearman's ρ of value vs mean score, and its bootstrap interval. Bars at most
    ``resolution`` long (the paths' ``path_atol``) count as 0 (module docstring)."""
    values = tuple(sorted(scales))
    means = tuple(float(np.mean([run_score(b, variant, resolution) for b in scales[v]]))
                  for v in values)
    if len(values) < 3:
        rho = Interval(None, None, None, level, "Spearman's ρ", len(values))
        return Trend(axis, values, means, rho, "not testable",
                     f"{len(values)} {axis}s with usable runs; a trend needs at least 3")
    rng = np.random.default_rng(SEED)
    replicates = np.stack([scale_replicates(scales[v], variant, n_bootstrap, rng, resolution)
                           for v in values], axis=1)
    x = np.array(values, dtype=np.float64)
    estimate = float(_spearman_rows(x, np.array([means]))[0])
    rhos = _spearman_rows(x, replicates)
    if not np.isfinite(estimate) or np.isnan(rhos).mean() > 1 - level:
        rho = Interval(None, None, None, level, "Spearman's ρ", len(values))
        return Trend(axis, values, means, rho, "not resolved",
                     "every bar at every scale is within the paths' resolution of 0"
                     if not any(means) else "the TO-score does not vary")
    low, high = _percentiles(np.nan_to_num(rhos, nan=0.0), level)
    rho = Interval(estimate, low, high, level,
                   f"Spearman's ρ; hierarchical bootstrap over seeds and minima "
                   f"({n_bootstrap:,} draws, seed {SEED})", len(values))
    pct = f"{level:.0%}"
    if high < 0:
        return Trend(axis, values, means, rho, "decreasing",
                     f"ρ = {estimate:.2f}, its {pct} interval [{low:.2f}, {high:.2f}] is below 0")
    if low > 0:
        return Trend(axis, values, means, rho, "increasing",
                     f"ρ = {estimate:.2f}, its {pct} interval [{low:.2f}, {high:.2f}] is above 0")
    return Trend(axis, values, means, rho, "not resolved",
                 f"ρ = {estimate:.2f}, its {pct} interval [{low:.2f}, {high:.2f}] includes 0")
