"""Sweeps: widths x depths x seeds (a grid or a cross) as runs, locally or on Ray.

Finished runs are loaded from the store, never recomputed, so a sweep can be stopped and
restarted, or grown by adding widths. ``executor="ray"`` (optional extra ``lossbarcode[ray]``)
sends one task per run to ``ray.init(address=...)`` (a local instance when no address is given),
asking for one GPU per task when the cluster has GPUs. Workers write their stages to their own
results folder (shared or not) and send the finished :class:`~lossbarcode.experiment.Result`
back as JSON, which the driver saves in its store.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lossbarcode.experiment import (
    ExperimentConfig,
    Result,
    load_result,
    run_experiment,
)
from lossbarcode.store import ResultStore

EXECUTORS = ("local", "ray")
DESIGNS = ("grid", "cross")
RunProgress = Callable[[int, int, ExperimentConfig], Any]
"""``progress(done, total, config)`` after each run of a sweep."""


def sweep_configs(
    base: ExperimentConfig,
    widths: Sequence[int] | None = None,
    depths: Sequence[int] | None = None,
    seeds: Sequence[int] | None = None,
    design: str = "grid",
) -> list[ExperimentConfig]:
    """The validated configs of a sweep; an axis left as None keeps the base value.

    ``design="grid"`` runs every width x depth; ``"cross"`` varies one scale at a time: every
    width at the base depth, then every depth at the base width (the two curves of a
    TO-score-vs-scale study for the price of their sum). Each scale runs every seed.
    """
    if design not in DESIGNS:
        raise ValueError(f"design must be one of {DESIGNS}, got {design!r}")
    axes = [list(widths or [base.width]), list(depths or [base.depth]), list(seeds or [base.seed])]
    if any(len(set(a)) != len(a) for a in axes):
        raise ValueError("widths, depths and seeds must not repeat values")
    if design == "grid":
        scales = list(itertools.product(axes[0], axes[1]))
    else:
        scales = [(w, base.depth) for w in axes[0]]
        scales += [(base.width, d) for d in axes[1] if (base.width, d) not in scales]
    return [base.replace(width=w, depth=d, seed=s).validate()
            for (w, d), s in itertools.product(scales, axes[2])]


def _run_remote(config: dict[str, Any], root: str | None) -> dict[str, Any]:
    """Ray task body: run one experiment in the worker's store, return the Result JSON."""
    return run_experiment(ExperimentConfig.from_dict(config), ResultStore(root)).to_json()


def _run_on_ray(configs: list[ExperimentConfig], store: ResultStore, address: str | None,
                progress: RunProgress | None) -> list[Result]:
    try:
        import ray
    except ImportError as err:
        raise ValueError("executor 'ray' needs Ray: pip install 'lossbarcode[ray]'") from err
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
    task = ray.remote(num_gpus=gpus)(_run_remote)
    todo = {}
    results: dict[str, Result] = {}
    for config in configs:
        done = load_result(store, config.run_id)
        if done is not None:
            results[config.run_id] = done
        else:
            todo[task.remote(config.to_dict(), str(store.root))] = config
    finished = len(results)
    pending = list(todo)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        result = Result.from_json(ray.get(ready[0]))
        if not store.exists(result.run_id):
            store.save_stage(result.run_id, "result", result.to_json())
        results[result.run_id] = result
        finished += 1
        if progress:
            progress(finished, len(configs), todo[ready[0]])
    return [results[c.run_id] for c in configs]


def sweep(
    base: ExperimentConfig,
    widths: Sequence[int] | None = None,
    depths: Sequence[int] | None = None,
    seeds: Sequence[int] | None = None,
    executor: str = "local",
    store: ResultStore | None = None,
    ray_address: str | None = None,
    progress: RunProgress | None = None,
    design: str = "grid",
) -> list[Result]:
    """Run (or load) every run of the grid; returns their Results in grid order.

    Args:
        base: the config every run starts from.
        widths, depths, seeds: the grid axes (None keeps the base value).
        executor: ``"local"`` (in this process, one run after another) or ``"ray"``.
        store: results folder (default ``ResultStore()``).
        ray_address: cluster address for ``ray.init`` (None: start a local instance).
        progress: ``progress(done, total, config)`` after each run.
        design: ``"grid"`` or ``"cross"`` (see :func:`sweep_configs`).
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    configs = sweep_configs(base, widths, depths, seeds, design)
    store = store or ResultStore()
    if executor == "ray":
        return _run_on_ray(configs, store, ray_address, progress)
    results = []
    for i, config in enumerate(configs):
        results.append(run_experiment(config, store))
        if progress:
            progress(i + 1, len(configs), config)
    return results


def sweep_records(results: Sequence[Result]) -> list[dict[str, Any]]:
    """One flat record per run: scale, seed, TO-score (config variant), mean errors."""
    return [
        {
            "run_id": r.run_id, "dataset": r.config.dataset, "arch": r.config.arch,
            "width": r.config.width, "depth": r.config.depth, "seed": r.config.seed,
            "k": r.k, "n_params": r.n_params, "to_score": r.score,
            "score_variant": r.config.score_variant,
            "train_loss": float(np.nanmean(r.train_loss)),
            "test_error": float(np.nanmean(r.test_error)) if np.isfinite(r.test_error).any()
            else None,
            "n_diverged": int(r.diverged.sum()),
            "paths_version": r.paths_version,
            "paths_converged": int(r.path_converged.sum()), "n_paths": len(r.path_converged),
            "bars_certified": r.certified[0], "bars_finite": r.certified[1],
            "path_atol": r.config.path_atol,
        }
        for r in results
    ]


def summarize(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (arch, width, depth): TO-score mean / std / per-seed values and mean test error.

    Rows are sorted by arch, depth, width.
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault((rec["arch"], rec["width"], rec["depth"]), []).append(rec)
    rows = []
    for (arch, width, depth), recs in sorted(groups.items(), key=lambda g: (g[0][0], g[0][2],
                                                                            g[0][1])):
        scores = np.array([r["to_score"] for r in recs])
        errors = [r["test_error"] for r in recs if r["test_error"] is not None]
        rows.append({
            "arch": arch, "width": width, "depth": depth, "n_params": recs[0]["n_params"],
            "runs": len(recs), "to_score_mean": float(scores.mean()),
            "to_score_std": float(scores.std(ddof=1)) if len(scores) > 1 else 0.0,
            "to_score_seeds": scores.tolist(), "seeds": [r["seed"] for r in recs],
            "test_error_mean": float(np.mean(errors)) if errors else None,
        })
    return rows
