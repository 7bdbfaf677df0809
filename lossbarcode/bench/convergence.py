"""``lossbarcode bench convergence``: per pair, is the default path as low as we can find?

Every path is an upper bound on its pair's barrier, so the default (what a run computes) is
judged against the lowest of three other attempts on the same certified minima: its own
restarts (NEB from the route and bent starts), the independent string method, and NEB with
four times the step caps. The target, per pair: the default's barrier is at most that best
plus ``max(path_tol * segment, 2e-3)``. Every family is measured (fcn, cnn, resnet and a
transformer, at small sizes), pair by pair (a mean over pairs would hide one bad pair).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from lossbarcode import choices
from lossbarcode.experiment import ExperimentConfig, build_landscape
from lossbarcode.minima import find_minima
from lossbarcode.paths import connect
from lossbarcode.planning import lowest_per_pair

# Small configs of every family: (name, config fields).
CASES: dict[str, dict] = {
    "fcn": {"arch": "fcn", "width": 8, "depth": 2},
    "cnn": {"arch": "cnn", "width": 4, "depth": 2},
    "resnet": {"arch": "resnet", "width": 4, "depth": 1},
    "transformer": {"dataset": "modadd", "arch": "transformer", "width": 16, "depth": 1,
                    "heads": 2},
}
ABS_SLACK = 2e-3  # the target's absolute part, in loss units


def convergence_benchmark(
    families: tuple[str, ...] = tuple(CASES),
    k: int = 4,
    factor: int = 4,
    progress: Callable[[str], object] | None = None,
    overrides: dict | None = None,
) -> list[dict]:
    """One row per pair of ``k`` minima of each family in ``families`` (:data:`CASES`): the
    excess (barrier minus the higher endpoint loss) of the default paths, of the best of its
    restarts, of the string method, and of NEB with ``factor`` times the step caps; the
    target and whether the default meets it; and per family the paths each way optimised and
    their seconds (on the family's first row). ``overrides``: config fields set in every case
    (e.g. a smaller ``n_train`` for a quick look)."""
    rows = []
    for family in families:
        config = ExperimentConfig(**{**CASES[family], "k": k, **(overrides or {})})
        land = build_landscape(config)
        start = time.perf_counter()
        mins = find_minima(land, k, **config.minima_settings())
        if progress:
            progress(f"{family}: {k} minima ({int(mins.certified.sum())} certified) in "
                     f"{time.perf_counter() - start:.1f} s on {land.device}")
        settings = {**config.path_settings(), "pairs": "all"}
        timed: dict[str, tuple] = {}
        for name, kwargs in (
                ("default", {**settings, "pairs": config.pairs}),
                ("restarts", settings),
                ("string", {**settings, "method": "string", "restarts": 1}),
                (f"{factor}x", {**settings, "restarts": 1,
                                "max_steps": factor * config.path_max_steps,
                                "final_steps": factor * choices.PATH_FINAL_STEPS})):
            start = time.perf_counter()
            paths = connect(land, mins, **kwargs)
            timed[name] = (paths, time.perf_counter() - start)
            if progress:
                progress(f"{family}: {name}, {paths.m} paths in {timed[name][1]:.1f} s")
        best = {name: lowest_per_pair(p.pairs, p.barriers) for name, (p, _) in timed.items()}
        default_paths = timed["default"][0]
        converged = {tuple(sorted(pair)): bool(ok) for pair, ok in zip(
            default_paths.pairs.tolist(), default_paths.converged, strict=True)}
        for n, (pair, restarted) in enumerate(sorted(best["restarts"].items())):
            floor = float(max(mins.train_loss[pair[0]], mins.train_loss[pair[1]]))
            # A pair the planner left out has no default path: its route through the
            # optimised ones is its barrier (the barcode never needs more).
            default = best["default"].get(pair, np.inf)
            lowest = min(restarted, best["string"][pair], best[f"{factor}x"][pair], default)
            target = lowest + max(config.path_tol * (lowest - floor), ABS_SLACK)
            row = {"family": family, "pair": f"{pair[0]}-{pair[1]}",
                   "excess_default": default - floor, "excess_restarts": restarted - floor,
                   "excess_string": best["string"][pair] - floor,
                   f"excess_{factor}x": best[f"{factor}x"][pair] - floor,
                   "converged": converged.get(pair),
                   "meets_target": bool(default <= target) if pair in best["default"] else None}
            if n == 0:
                row.update({f"paths_{name}": p.m for name, (p, _) in timed.items()})
                row.update({f"s_{name}": round(sec, 1) for name, (_, sec) in timed.items()})
            rows.append(row)
    return rows

