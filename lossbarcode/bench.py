"""Benchmarks that print figures (``python -m lossbarcode bench topology``).

Each benchmark runs our code and a reference on the same input in one process and prints the
ratio, so that noise on a shared machine affects both sides alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from scipy.ndimage import gaussian_filter

from lossbarcode.experiment import ExperimentConfig
from lossbarcode.topology import Barcode, graph_barcode, grid_barcode, grid_edges, knn_edges


def lower_star_ripser(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """ripser's H0 diagram of the lower-star filtration of a graph, shape ``(n, 2)``.

    ripser reads only the entries with row < col of a sparse matrix, so edges are canonicalised;
    duplicates are removed because scipy sums repeated sparse entries.
    """
    from ripser import ripser  # lazy: the reference only, not a dependency of the core
    from scipy.sparse import coo_matrix

    n = values.shape[0]
    lo, hi = np.minimum(edges[:, 0], edges[:, 1]), np.maximum(edges[:, 0], edges[:, 1])
    keep = lo != hi
    lo, hi = np.unique(np.stack([lo[keep], hi[keep]], axis=1), axis=0).T
    rows = np.concatenate([np.arange(n), lo])
    cols = np.concatenate([np.arange(n), hi])
    data = np.concatenate([values, np.maximum(values[lo], values[hi])])
    matrix = coo_matrix((data, (rows, cols)), shape=(n, n)).tocsr()
    return ripser(matrix, maxdim=0, distance_matrix=True)["dgms"][0]


def _best_of(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    best, out = np.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def _smooth_field(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """A random smooth landscape with many minima (blurred white noise)."""
    rng = np.random.default_rng(seed)
    return gaussian_filter(rng.standard_normal(shape), sigma=4.0)


def topology_benchmark(
    grid_sizes: tuple[int, ...] = (101, 501, 1001),
    knn_points: int = 100_000,
    repeat: int = 3,
    noise_size: int = 1001,
) -> list[dict]:
    """Time :func:`grid_barcode` / :func:`graph_barcode` against ripser on the same input.

    Grids: ``grid_barcode`` on the 2-D array (building its edges included) vs ripser on the
    same 8-neighbour graph (building its sparse matrix included). kNN graph: both get the edge
    list. A white-noise grid of side ``noise_size`` (0 to skip) is the worst case: about one
    vertex in nine is a local minimum. Returns one dict per case.
    """
    cases = []
    for size in grid_sizes:
        field = _smooth_field((size, size), seed=size)
        cases.append((f"grid {size}x{size} (8-nbr)", field.reshape(-1),
                      grid_edges(field.shape), lambda f=field: grid_barcode(f)))
    rng = np.random.default_rng(0)
    if noise_size:
        noise = rng.random((noise_size, noise_size))
        cases.append((f"grid {noise_size}x{noise_size} white noise", noise.reshape(-1),
                      grid_edges(noise.shape), lambda f=noise: grid_barcode(f)))
    points = rng.random((knn_points, 3))
    values = np.sin(6 * points[:, 0]) * np.cos(5 * points[:, 1]) + points[:, 2] ** 2
    edges = knn_edges(points, 12)
    cases.append((f"kNN graph n={knn_points} (k=12, 3-D)", values, edges,
                  lambda: graph_barcode(values, edges)))

    import ripser  # noqa: F401  # import once up front so its cost is not timed

    rows = []
    for name, values, edges, ours_fn in cases:
        ours_s, ours = _best_of(ours_fn, repeat)
        ref_s, ref = _best_of(lambda v=values, e=edges: lower_star_ripser(v, e), repeat)
        assert isinstance(ours, Barcode)
        rows.append({
            "case": name,
            "vertices": int(values.shape[0]),
            "edges": int(edges.shape[0]),
            "bars": len(ours),
            "ripser_bars": int(len(ref)),
            "ours_s": ours_s,
            "ripser_s": ref_s,
            "ratio": ours_s / ref_s,
        })
    return rows


def experiment_benchmark(config: ExperimentConfig | None = None, repeat: int = 5) -> list[dict]:
    """Time one experiment cold (empty results folder) and then re-opened from the store.

    Returns one row per stage of the cold run plus the total, and the median cached load.
    """
    import tempfile

    from lossbarcode.experiment import load_result, run_experiment
    from lossbarcode.store import ResultStore

    config = (config or ExperimentConfig()).validate()
    with tempfile.TemporaryDirectory() as folder:
        store = ResultStore(folder)
        start = time.perf_counter()
        result = run_experiment(config, store)
        cold = time.perf_counter() - start
        loads = []
        for _ in range(repeat):
            start = time.perf_counter()
            load_result(store, result.run_id)
            loads.append(time.perf_counter() - start)
    rows = [{"what": f"cold: {stage}", "seconds": seconds}
            for stage, seconds in result.timings.items()]
    rows.append({"what": "cold: total (incl. data, model, saving)", "seconds": cold})
    rows.append({"what": f"cached: load finished run (median of {repeat})",
                 "seconds": float(np.median(loads))})
    rows.append({"what": f"TO-score {result.score:.4g}, K={result.k}, "
                         f"{len(result.pairs)} paths, device {result.device}", "seconds": 0.0})
    return rows


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
    from lossbarcode.experiment import build_landscape
    from lossbarcode.minima import find_minima
    from lossbarcode.paths import connect

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
