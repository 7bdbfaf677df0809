"""``lossbarcode bench convergence``: fixed NEB step budgets against the converging default."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from lossbarcode.experiment import ExperimentConfig, build_landscape
from lossbarcode.minima import find_minima
from lossbarcode.paths import connect


def convergence_benchmark(
    widths: tuple[int, ...] = (8, 32, 128, 512),
    k: int = 4,
    budgets: tuple[int, ...] = (1, 4, 16),
    base_steps: int = 300,
    progress: Callable[[str], object] | None = None,
) -> list[dict]:
    """Barrier excess of fixed step budgets vs the converging default, on the same minima.

    For each width: K minima of digits fcn depth 2 (the default experiment's training), then
    NEB on all pairs with a fixed budget of ``b * base_steps`` steps for each ``b`` in
    ``budgets`` (the algorithm of path version 1), and with the new default (converge, then
    stop). The *excess* of a path is its barrier minus the higher endpoint loss; every row
    gives the mean over pairs. ``target`` checks the convergence goal: the default's excess is
    at most ``max(2 x, x + 3e-4)`` of the largest budget's excess ``x`` (the goal is stated for
    16x; a smaller largest budget makes a weaker check).
    """
    rows = []
    for width in widths:
        config = ExperimentConfig(width=width, depth=2, k=k)
        land = build_landscape(config)
        mins = find_minima(land, k, optimizer=config.optimizer, lr=config.lr,
                           schedule=config.schedule, steps=config.steps,
                           batch_size=config.batch_size, seed=config.seed)
        floor = None
        row: dict = {"width": width, "n_params": land.n_params, "pairs": k * (k - 1) // 2}
        for b in (*budgets, None):
            start = time.perf_counter()
            paths = connect(land, mins, "all", "neb", images=config.images,
                            steps=None if b is None else b * base_steps,
                            eval_points=config.eval_points, seed=config.seed)
            seconds = time.perf_counter() - start
            floor = np.maximum(mins.train_loss[paths.pairs[:, 0]],
                               mins.train_loss[paths.pairs[:, 1]])
            excess = float(np.mean(paths.barriers - floor))
            name = "default" if b is None else f"{b}x"
            row[f"excess_{name}"] = excess
            row[f"seconds_{name}"] = seconds
            if b is None:
                row["steps_default"] = float(np.mean(paths.steps_used))
                row["converged"] = f"{int(paths.converged.sum())}/{paths.m}"
            if progress:
                progress(f"width {width}: {name} excess {excess:.5f} in {seconds:.1f} s")
        if budgets:  # the goal is stated against the largest budget that was run
            ref = row[f"excess_{max(budgets)}x"]
            row["target"] = max(2 * ref, ref + 3e-4)
            row["meets_target"] = row["excess_default"] <= row["target"]
        rows.append(row)
    return rows
