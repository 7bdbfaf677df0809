"""``lossbarcode bench estimate``: the cost model's predictions against measured runs.

Every preset (:data:`~lossbarcode.choices.PRESETS`) is predicted by the raw model, then run
cold into a temporary results folder. The calibrated prediction of each preset is fitted
leave-one-out on the other presets' stage timings from the same benchmark run: what a user
sees after a few runs on this machine; like :func:`~lossbarcode.cost.store_calibration`, it
uses only the runs of the same dataset and architecture when there are any. A preset whose
task no other preset shares is run a second time (next seed, row "<name> again"), to show the
calibration after one run of that task. The goal is a ratio within 2x for every preset.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence

from lossbarcode.choices import PRESETS

TARGET_RATIO = 2.0  # predicted / actual within this factor either way


def estimate_benchmark(presets: Sequence[str] = tuple(PRESETS),
                       progress: Callable[[str], object] | None = None) -> list[dict]:
    """One row per preset: ``model_s`` (raw prediction), ``calibrated_s`` (leave-one-out),
    ``actual_s`` (wall seconds of the cold run) and their ratios; ``ValueError`` for an
    unknown preset name."""
    from lossbarcode import cost
    from lossbarcode.experiment import ExperimentConfig, run_experiment
    from lossbarcode.store import ResultStore

    unknown = [name for name in presets if name not in PRESETS]
    if unknown or not presets:
        raise ValueError(f"unknown presets {unknown}; choose from {', '.join(PRESETS)}")
    configs = {name: ExperimentConfig(**PRESETS[name][1]) for name in presets}
    # A task (dataset, architecture) no other preset shares is run once more with the next
    # seed: its row shows what the same-task calibration does after one run of that task.
    tasks = [(c.dataset, c.arch) for c in configs.values()]
    for name, config in list(configs.items()):
        if len(configs) > 1 and tasks.count((config.dataset, config.arch)) == 1:
            configs[f"{name} again"] = config.replace(seed=config.seed + 1)
    rows, timings = [], {}
    with tempfile.TemporaryDirectory() as folder:
        store = ResultStore(folder)
        for name, config in configs.items():
            model_s = cost.estimate_cost(config)["seconds"]
            start = time.perf_counter()
            result = run_experiment(config, store)
            actual_s = time.perf_counter() - start
            timings[name] = result.timings
            rows.append({"preset": name, "model_s": model_s, "actual_s": actual_s})
            if progress:
                progress(f"{name}: predicted {model_s:.1f} s, took {actual_s:.1f} s")
    for row in rows:
        config = configs[row["preset"]]
        # Leave-one-out; a task's first run does not see its own second run.
        others = [n for n in configs if n not in (row["preset"], f"{row['preset']} again")]
        same = [n for n in others
                if (configs[n].dataset, configs[n].arch) == (config.dataset, config.arch)]
        calibration = cost.fit_calibration(  # as cost.store_calibration chooses its runs
            (cost.stage_seconds(configs[n], cost.config_throughput(configs[n])), timings[n])
            for n in (same or others))
        row["calibrated_s"] = cost.estimate_cost(config, calibration)["seconds"]
        row["calibrated_on"] = f"{calibration.runs} {'same-task' if same else 'other'}"
        row["model_ratio"] = row["model_s"] / row["actual_s"]
        row["calibrated_ratio"] = row["calibrated_s"] / row["actual_s"]
        row["within_2x"] = 1 / TARGET_RATIO <= row["calibrated_ratio"] <= TARGET_RATIO
    return rows


def print_estimate_benchmark(rows: list[dict]) -> None:
    """Print the rows of :func:`estimate_benchmark` as a table, with the worst factor."""
    print("Cost model vs measured cold runs (ratio = predicted / actual; calibrated: fitted "
          "on the other presets' stage timings, leave-one-out, same-task runs when there are "
          "any)")
    header = (f"{'preset':<14} {'model s':>9} {'calibrated s':>13} {'on runs':>12} "
              f"{'actual s':>9} {'model ratio':>12} {'calib. ratio':>13} {'within 2x':>10}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['preset']:<14} {r['model_s']:>9.1f} {r['calibrated_s']:>13.1f} "
              f"{r['calibrated_on']:>12} {r['actual_s']:>9.1f} {r['model_ratio']:>12.2f} "
              f"{r['calibrated_ratio']:>13.2f} {'yes' if r['within_2x'] else 'NO':>10}")
    worst = max(max(r["calibrated_ratio"], 1 / r["calibrated_ratio"]) for r in rows)
    print(f"worst calibrated factor {worst:.2f}x (target {TARGET_RATIO:g}x)")
