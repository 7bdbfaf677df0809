"""Sweeps: widths x depths x seeds (a grid or a cross) as runs, locally, on Ray or on Slurm.

Finished runs are loaded from the store, never recomputed, so a sweep can be stopped and
restarted, or grown by adding widths. ``executor="ray"`` (optional extra ``lossbarcode[ray]``)
sends one task per run to ``ray.init(address=...)`` (a local instance when no address is given),
asking for one GPU per task when the cluster has GPUs. Workers write their stages to their own
results folder (shared or not) and send the finished :class:`~lossbarcode.experiment.Result`
back as JSON, which the driver saves in its store. ``executor="submitit"`` (optional extra
``lossbarcode[slurm]``) submits one job per run with submitit: to Slurm where it is installed
(academic clusters), else as local processes; jobs share the results folder and run ids, and
their logs go to its ``.submitit/`` folder.

A sweep's records, summary and barcodes are kept in a sweep file (``lossbarcode sweep
--output``, the dashboard's demo sweep): :func:`read_sweep_file` describes and checks the
format, :func:`write_sweep_file` writes it.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lossbarcode import choices, topology
from lossbarcode.choices import MAX_JSON_BYTES
from lossbarcode.experiment import (
    ExperimentConfig,
    Result,
    load_result,
    run_experiment,
    save_result,
)
from lossbarcode.health import CERTIFIED_CURVES, run_health
from lossbarcode.store import (
    FileRefusedError,
    ResultStore,
    atomic_write_bytes,
    parse_json,
    read_regular_file,
)
from lossbarcode.topology import Barcode

EXECUTORS = choices.EXECUTORS
RAY_CONNECT_TIMEOUT_S = 30.0
DESIGNS = ("grid", "cross")
RunProgress = Callable[[int, int, ExperimentConfig], Any]
"""``progress(done, total, config)`` after each run of a sweep."""


def axis_values(text: str, name: str) -> list[int]:
    """The integers of a comma list such as ``"4,8,16"`` (spaces allowed): a sweep axis typed on
    the command line or in the dashboard. ``ValueError`` naming ``name`` and saying how to
    write it, for anything else or for no value."""
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise ValueError(f"{name}: write a comma list of integers, e.g. 4,8,16 "
                         f"(got {text!r})") from None
    if not values:
        raise ValueError(f"{name}: give at least one value")
    return values


AXES = ("widths", "depths", "seeds")  # a sweep's axes, named as the keyword arguments


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
    # Each axis value on its own first, so the error names the axis (e.g. a seed too large).
    for axis, field, values in zip(AXES, ("width", "depth", "seed"), axes, strict=True):
        for value in values:
            try:
                base.replace(**{field: value})
            except ValueError as err:
                reason = str(err).removeprefix("invalid experiment config: ")
                raise ValueError(f"{axis}: {value!r} is not a valid {field}: {reason}") from None
    if design == "grid":
        scales = list(itertools.product(axes[0], axes[1]))
    else:
        scales = [(w, base.depth) for w in axes[0]]
        scales += [(base.width, d) for d in axes[1] if (base.width, d) not in scales]
    return [base.replace(width=w, depth=d, seed=s)
            for (w, d), s in itertools.product(scales, axes[2])]


def _run_remote(config: dict[str, Any], root: str | None) -> dict[str, Any]:
    """A Ray task's or submitit job's body: run one experiment in the worker's store, return
    the Result JSON."""
    return run_experiment(ExperimentConfig.from_dict(config), ResultStore(root)).to_dict()


def _connect_ray(address: str | None, timeout: float):
    """``ray`` after ``ray.init(address=...)``, or ``ValueError`` if it does not connect
    within ``timeout`` seconds (ray.init itself would retry for minutes)."""
    try:
        import ray
    except ImportError as err:
        raise ValueError("executor 'ray' needs Ray: pip install 'lossbarcode[ray]'") from err
    if ray.is_initialized():
        return ray
    outcome: list[BaseException | None] = []

    def connect() -> None:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR)
            outcome.append(None)
        except BaseException as err:  # reported to the caller below
            outcome.append(err)

    thread = threading.Thread(target=connect, name="ray-connect", daemon=True)
    thread.start()
    thread.join(timeout)
    where = f"the Ray cluster at {address}" if address else "a local Ray instance"
    if not outcome:
        raise ValueError(f"could not connect to {where} within {timeout:g} s; check "
                         "--ray-address (e.g. HOST:6379, from 'ray start --head') or raise "
                         "--ray-timeout")
    if outcome[0] is not None:
        raise ValueError(f"could not connect to {where}: {str(outcome[0]).splitlines()[0]}")
    return ray


def _stored(configs: list[ExperimentConfig], store: ResultStore
            ) -> tuple[dict[str, Result], list[ExperimentConfig]]:
    """The finished runs of ``configs`` (run id -> Result) and the configs still to compute:
    a sweep that is already finished needs no cluster at all."""
    results: dict[str, Result] = {}
    for config in configs:
        done = load_result(store, config.run_id)
        if done is not None:
            results[config.run_id] = done
    return results, [c for c in configs if c.run_id not in results]


def _take_back(store: ResultStore, config: ExperimentConfig, data: dict[str, Any],
               where: str) -> Result:
    """A worker's result for ``config``, saved into the driver's store unless it is there."""
    result = Result.from_dict(data)
    if result.run_id != config.run_id:
        raise ValueError(f"a {where} worker computed run {config.run_id} as {result.run_id}: "
                         "its data files differ from this machine's; give every worker the "
                         "same data")
    with store.lock(result.run_id):
        if load_result(store, result.run_id, warn=False) is None:
            save_result(store, result)
    return result


def _run_on_ray(configs: list[ExperimentConfig], store: ResultStore, address: str | None,
                progress: RunProgress | None, timeout: float = RAY_CONNECT_TIMEOUT_S
                ) -> list[Result]:
    results, missing = _stored(configs, store)
    if missing:
        ray = _connect_ray(address, timeout)
        gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
        task = ray.remote(num_gpus=gpus)(_run_remote)
        todo = {task.remote(config.to_dict(), str(store.root)): config for config in missing}
        pending = list(todo)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            config = todo[ready[0]]
            results[config.run_id] = _take_back(store, config, ray.get(ready[0]), "Ray")
            if progress:
                progress(len(results), len(configs), config)
    elif progress:
        progress(len(configs), len(configs), configs[-1])
    return [results[c.run_id] for c in configs]


def _run_on_submitit(configs: list[ExperimentConfig], store: ResultStore,
                     cluster: str | None, progress: RunProgress | None,
                     parameters: dict[str, Any] | None = None) -> list[Result]:
    """One submitit job per missing run (Slurm when it is there, else local processes; the
    ``cluster`` name forces one: ``"slurm"``, ``"local"``, ``"debug"``), logs in the results
    folder's ``.submitit/``."""
    results, missing = _stored(configs, store)
    if missing:
        try:
            import submitit
        except ImportError as err:
            raise ValueError("executor 'submitit' needs submitit: pip install "
                             "'lossbarcode[slurm]'") from err
        executor = submitit.AutoExecutor(folder=store.root / ".submitit" / "%j",
                                         cluster=cluster)
        executor.update_parameters(name="lossbarcode", **(parameters or {}))
        jobs = {}
        for config in missing:
            jobs[executor.submit(_run_remote, config.to_dict(), str(store.root))] = config
        for job in submitit.helpers.as_completed(list(jobs)):
            config = jobs[job]
            try:
                data = job.result()
            except Exception as err:  # the job's own error, with where its log is
                raise ValueError(f"the submitit job of run {config.run_id} failed "
                                 f"({str(err).strip().splitlines()[-1]}); its log: "
                                 f"{job.paths.stderr}") from None
            results[config.run_id] = _take_back(store, config, data, "submitit")
            if progress:
                progress(len(results), len(configs), config)
    elif progress:
        progress(len(configs), len(configs), configs[-1])
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
    ray_timeout: float = RAY_CONNECT_TIMEOUT_S,
    lock_timeout: float | None = None,
    submitit_cluster: str | None = None,
    submitit_parameters: dict[str, Any] | None = None,
) -> list[Result]:
    """Run (or load) every run of the grid; returns their Results in grid order.

    Args:
        base: the config every run starts from.
        widths, depths, seeds: the grid axes (None keeps the base value).
        executor: ``"local"`` (in this process, one run after another), ``"ray"`` or
            ``"submitit"`` (one job per run: Slurm, or local processes without it).
        store: results folder (default ``ResultStore()``).
        ray_address: cluster address for ``ray.init`` (None: start a local instance).
        progress: ``progress(done, total, config)`` after each run.
        design: ``"grid"`` or ``"cross"`` (see :func:`sweep_configs`).
        ray_timeout: seconds to wait for ``ray.init`` to connect (``ValueError`` after).
        lock_timeout: seconds to wait for a run another process is computing (local).
        submitit_cluster: ``None`` (Slurm if there, else local), ``"slurm"``, ``"local"`` or
            ``"debug"`` (in this process).
        submitit_parameters: ``AutoExecutor.update_parameters`` keywords, e.g.
            ``{"slurm_partition": "gpu", "gpus_per_node": 1, "timeout_min": 120}``.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    configs = sweep_configs(base, widths, depths, seeds, design)
    store = store or ResultStore()
    if executor == "ray":
        return _run_on_ray(configs, store, ray_address, progress, ray_timeout)
    if executor == "submitit":
        return _run_on_submitit(configs, store, submitit_cluster, progress,
                                submitit_parameters)
    results = []
    for i, config in enumerate(configs):
        results.append(run_experiment(config, store, lock_timeout=lock_timeout))
        if progress:
            progress(i + 1, len(configs), config)
    return results


def sweep_records(results: Sequence[Result]) -> list[dict[str, Any]]:
    """One flat record per run: scale, seed, TO-score (config variant), mean errors, and its
    health (:func:`lossbarcode.health.run_health`: ``health`` summary, ``broken``)."""
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
            "minima_certified": r.minima_count[0],
            "path_atol": r.config.path_atol,
            "health": health.summary(), "broken": health.broken,
        }
        for r, health in ((r, run_health(r)) for r in results)
    ]


def _resolution(recs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Convergence of a scale's runs: certified bars, converged paths, and the TO-score that
    bars each as long as the path tolerance would give (``to_score_floor``; None for a
    range-normalised variant or records made before path convergence was checked)."""
    if not all("bars_finite" in r for r in recs):
        return {"to_score_floor": None}
    variant = recs[0]["score_variant"]
    floor = None if variant.endswith("_range") else topology.to_score_floor(
        max(r["path_atol"] for r in recs), max(r["bars_finite"] for r in recs), variant)
    return {
        "to_score_floor": floor,
        "bars_certified": int(sum(r["bars_certified"] for r in recs)),
        "bars_finite": int(sum(r["bars_finite"] for r in recs)),
        "paths_converged": int(sum(r["paths_converged"] for r in recs)),
        "n_paths": int(sum(r["n_paths"] for r in recs)),
    }


def curve_ready(record: dict[str, Any]) -> bool:
    """Whether a sweep record may enter a curve: its run is not broken and at least
    :data:`~lossbarcode.health.CERTIFIED_CURVES` of its minima are certified (records made
    before minima were certified never are)."""
    return (not record.get("broken") and "minima_certified" in record
            and record["minima_certified"] >= CERTIFIED_CURVES * record["k"])


def summarize(records: Sequence[dict[str, Any]], include_broken: bool = False,
              barcodes: Mapping[str, Barcode] | None = None) -> list[dict[str, Any]]:
    """Per (arch, width, depth): TO-score mean / std / per-seed values and mean test error.

    Records that are not :func:`curve_ready` (broken runs, or fewer than 90% of their minima
    certified) are left out unless ``include_broken``; each row counts them in
    ``runs_left_out``. A scale with no usable run has no row. Rows are sorted by arch, depth,
    width. With ``barcodes`` (``run_id -> Barcode``, e.g. a sweep file's), a row whose runs all
    have one gets ``to_score_low`` / ``to_score_high``: the interval of its mean
    (:func:`lossbarcode.confidence.scale_interval`: seeds and minima).
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    left_out: dict[tuple, int] = {}
    for rec in records:
        scale = (rec["arch"], rec["width"], rec["depth"])
        if not curve_ready(rec) and not include_broken:
            left_out[scale] = left_out.get(scale, 0) + 1
        else:
            groups.setdefault(scale, []).append(rec)
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
            "runs_left_out": left_out.get((arch, width, depth), 0),
            **_resolution(recs), **_interval(recs, barcodes),
        })
    return rows


def _interval(recs: Sequence[dict[str, Any]], barcodes: Mapping[str, Barcode] | None
              ) -> dict[str, Any]:
    if not barcodes or not all(r["run_id"] in barcodes for r in recs):
        return {}
    from lossbarcode.confidence import scale_interval

    interval = scale_interval([barcodes[r["run_id"]] for r in recs], recs[0]["score_variant"])
    return {"to_score_low": interval.low, "to_score_high": interval.high,
            "interval": f"{interval.level:.0%} {interval.method}"}



def sweep_resolution(summary: Sequence[dict[str, Any]]) -> tuple[float | None, int, int]:
    """``(floor, certified, finite)`` of :func:`summarize` rows: the highest resolution floor
    of a scale (None when no row has one: records made before path convergence was checked,
    or a range-normalised score), and the certified and finite bars over all rows."""
    floors = [row["to_score_floor"] for row in summary if row.get("to_score_floor")]
    return (max(floors) if floors else None,
            sum(row.get("bars_certified", 0) for row in summary),
            sum(row.get("bars_finite", 0) for row in summary))


def fullest_value(records: Sequence[dict[str, Any]], along: str, fixed_axis: str,
                  values: Sequence[int]) -> int:
    """The value of ``fixed_axis`` at which the records vary most along ``along`` (the base of
    a cross design); the first of ``values`` on a tie."""
    spread = {v: len({r[along] for r in records if r[fixed_axis] == v}) for v in values}
    return max(values, key=spread.get)

def sweep_trends(records: Sequence[dict[str, Any]], barcodes: Mapping[str, Barcode],
                 include_broken: bool = False
                 ) -> dict[tuple[str, str], tuple[Any, list[str]]]:
    """``(arch, axis) -> (Trend, left out)`` of the TO-score along width (at the depth with
    the most widths) and along depth (at the width with the most depths), over the
    :func:`curve_ready` records (all with ``include_broken``) whose barcode is in ``barcodes``
    (:func:`lossbarcode.confidence.trend`; bars within the records' ``path_atol`` count as 0).
    A scale whose deaths are not resolved (:func:`~lossbarcode.health.deaths_resolved`) is
    left out of the trend; ``left out`` names those scales, ``"8 (0/21)"``."""
    from lossbarcode.confidence import trend
    from lossbarcode.health import deaths_resolved

    usable = [r for r in records if (include_broken or curve_ready(r))
              and r["run_id"] in barcodes]
    out = {}
    for arch in sorted({r["arch"] for r in usable}):
        mine = [r for r in usable if r["arch"] == arch]
        for axis, other in (("width", "depth"), ("depth", "width")):
            at = fullest_value(mine, axis, other, sorted({r[other] for r in mine}))
            runs: dict[int, list[dict[str, Any]]] = {}
            for r in mine:
                if r[other] == at:
                    runs.setdefault(r[axis], []).append(r)
            if not runs:
                continue
            scales, left = {}, []
            for value, recs in sorted(runs.items()):
                done = sum(r.get("bars_certified", 0) for r in recs)
                finite = sum(r.get("bars_finite", 0) for r in recs)
                if deaths_resolved(done, finite):
                    scales[value] = [barcodes[r["run_id"]] for r in recs]
                else:
                    left.append(f"{value} ({done}/{finite})")
            out[(arch, axis)] = (trend(axis, scales, mine[0]["score_variant"],
                                       resolution=max(r.get("path_atol", 0.0) for r in mine)),
                                 left)
    return out


# --------------------------------------------------------------------------- sweep files

SWEEP_RECORD_KEYS = ("run_id", "arch", "width", "depth", "seed", "to_score", "n_params",
                     "test_error")
"""The keys every record of a sweep file has (the rest of :func:`sweep_records` may be
missing from files made by older versions)."""


def sweep_family(config: ExperimentConfig) -> str:
    """Runs that differ only in width, depth and seed belong to one sweep family: this names
    it (the rest of the config, as sorted JSON)."""
    rest = {k: v for k, v in config.to_dict().items() if k not in ("width", "depth", "seed")}
    return json.dumps(rest, sort_keys=True)


def sweep_commands(document: dict[str, Any]) -> list[str]:
    """The ``lossbarcode sweep`` command(s) a sweep document records (a string or a list)."""
    commands = document.get("command") or []
    return [commands] if isinstance(commands, str) else [str(c) for c in commands]


def read_sweep_file(path: Path) -> dict[str, Any]:
    """Read and check a sweep file (``lossbarcode sweep --output``, ``assets/demo_sweep.json``).

    A sweep file is one JSON object:

    - ``records``: a list of :func:`sweep_records` rows, each with at least
      :data:`SWEEP_RECORD_KEYS` (``run_id`` a string);
    - ``barcodes``: ``{run_id: Barcode.to_dict()}`` (optional; missing means none stored);
    - ``command``: the ``lossbarcode sweep`` command line(s) that made it, a string or a list;
    - ``description``, ``score_variant``: for display;
    - ``summary``: :func:`summarize` of the records when it was written (readers recompute it:
      whether broken runs count is the reader's choice).

    Returns the document with ``barcodes`` filled in; ``ValueError`` (saying what is wrong)
    for anything else, including a file that is not a regular file or is larger than
    :data:`~lossbarcode.choices.MAX_JSON_BYTES`.
    """
    try:
        document = parse_json(read_regular_file(path, MAX_JSON_BYTES))
    except FileRefusedError as err:
        raise ValueError(f"sweep file {err}") from None
    except ValueError as err:  # not UTF-8, not JSON, NaN, nested too deep
        raise ValueError(f"{path} is not a sweep JSON file ({err})") from None
    problem = None
    if not isinstance(document, dict):
        problem = f"it holds a {type(document).__name__}, not an object"
    elif not isinstance(document.get("records"), list):
        problem = "it has no list of 'records'"
    elif not all(isinstance(r, dict) and all(k in r for k in SWEEP_RECORD_KEYS)
                 and isinstance(r["run_id"], str) for r in document["records"]):
        problem = f"a record lacks one of {list(SWEEP_RECORD_KEYS)}"
    elif not isinstance(document.get("barcodes", {}), dict):
        problem = "'barcodes' is not an object"
    elif not isinstance(document.get("command", []), str | list):
        problem = "'command' is not a string or a list"
    if problem:
        raise ValueError(f"{path} is not a lossbarcode sweep file ({problem})")
    document.setdefault("barcodes", {})
    return document


def sweep_barcodes(document: dict[str, Any]) -> dict[str, Barcode]:
    """``run_id -> Barcode`` of a sweep document's stored barcodes (those that parse)."""
    out = {}
    for run_id, data in (document.get("barcodes") or {}).items():
        try:
            out[run_id] = Barcode.from_dict(data)
        except (ValueError, TypeError, KeyError):
            continue  # the curves then draw std bars for its scale
    return out


def write_sweep_file(path: Path, results: Sequence[Result], command: str,
                     append: bool = False) -> list[dict[str, Any]]:
    """Write the sweep file (format: :func:`read_sweep_file`) of ``results``, made by
    ``command``; with ``append``, merge into an existing one (the same run ids are replaced,
    the commands accumulate). Returns all its records."""
    old: dict[str, Any] = {"records": [], "barcodes": {}}
    if append and Path(path).is_file():
        old = read_sweep_file(path)
    records = sweep_records(results)
    new_ids = {r["run_id"] for r in records}
    merged = [r for r in old["records"] if r["run_id"] not in new_ids] + records
    base = results[0].config
    document = {
        "description": f"TO-score sweep on {base.dataset} ({base.arch}), K={base.k} minima, "
                       f"{base.path_method} paths ({base.pairs} pairs), {base.path_rule}",
        "score_variant": base.score_variant,
        "command": [*sweep_commands(old), command],
        "records": merged,
        "summary": summarize(merged),
        "barcodes": {**old["barcodes"], **{r.run_id: r.barcode.to_dict() for r in results}},
    }
    atomic_write_bytes(Path(path), json.dumps(document, indent=1, allow_nan=False).encode())
    return merged
