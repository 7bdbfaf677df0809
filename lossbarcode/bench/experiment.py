"""``lossbarcode bench experiment``: one experiment cold, then re-opened from the store."""

from __future__ import annotations

import tempfile
import time

import numpy as np

from lossbarcode.experiment import ExperimentConfig, load_result, run_experiment
from lossbarcode.store import ResultStore


def experiment_benchmark(config: ExperimentConfig | None = None, repeat: int = 5) -> list[dict]:
    """Time one experiment cold (empty results folder) and then re-opened from the store.

    Returns one row per stage of the cold run plus the total, and the median cached load.
    """
    config = config or ExperimentConfig()
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
