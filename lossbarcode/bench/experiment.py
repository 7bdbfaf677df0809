"""``lossbarcode bench experiment``: one experiment cold, then re-opened from the store; with
``--busy``, its slowdown when one other process keeps a core busy."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from multiprocessing.synchronize import Event

import numpy as np

from lossbarcode.experiment import ExperimentConfig, Result, load_result, run_experiment
from lossbarcode.store import ResultStore

BUSY_TARGET = 2.5  # issue 20: at most this slowdown with one competing process


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


def _spin(started: Event, nice: int) -> None:
    """The competing process: a pure-Python loop keeps exactly one core busy (torch matmuls
    would bring a thread pool of their own, so the competition would depend on its size)."""
    os.nice(nice)
    started.set()
    while True:
        pass


@contextlib.contextmanager
def _competitor(nice: int | None) -> Iterator[None]:
    """One :func:`_spin` process at ``nice`` while the block runs (None: none)."""
    if nice is None:
        yield
        return
    context = multiprocessing.get_context("spawn")
    started = context.Event()
    process = context.Process(target=_spin, args=(started, nice), name="lossbarcode-spin",
                              daemon=True)
    process.start()
    try:
        started.wait(60)
        yield
    finally:
        process.terminate()
        process.join()


def _as_job(config: ExperimentConfig, store: ResultStore) -> Result:
    """The run as the dashboard computes it: a job in a worker process."""
    from lossbarcode.jobs import JobManager

    with JobManager(store) as manager:
        status = manager.wait(manager.submit_run(config))
    result = load_result(store, config.run_id)
    if status.state != "done" or result is None:
        raise RuntimeError(f"the benchmark's job {status.state}: {status.error}")
    return result


def busy_benchmark(config: ExperimentConfig | None = None,
                   progress: Callable[[str], None] | None = None) -> list[dict]:
    """Seconds of the experiment's minima and paths stages on the machine as it is ("idle")
    and with one competing CPU-bound process (:func:`_spin`), and the slowdown busy / idle.

    Each run is cold, in an empty results folder. Three cases:

    * a dashboard job (a worker process at nice +WORKER_NICE with
      :func:`~lossbarcode.devices.worker_threads` threads) against a competitor of the same
      priority: the slowdown from contention for the cores (the target's case);
    * the same job against a normal-priority competitor, to which a job yields by design;
    * the run in this process with torch's default thread count (the command line, and
      dashboard jobs before they had worker processes) against a normal-priority competitor.

    Rows also give the 1-minute load average before the idle and the busy run.
    """
    import torch

    from lossbarcode.devices import WORKER_NICE, usable_cores, worker_threads

    config = config or ExperimentConfig()
    note = progress or (lambda message: None)
    job = (f"job: worker process, {worker_threads(usable_cores())} thread(s), "
           f"nice +{WORKER_NICE}")
    inline = f"in this process: torch default {torch.get_num_threads()} thread(s)"
    runs: dict[str, Callable[[ExperimentConfig, ResultStore], Result]] = {
        job: _as_job, inline: run_experiment}

    def measure(how: str, nice: int | None) -> tuple[dict[str, float], float]:
        note(f"{how}: {'idle' if nice is None else f'competitor at nice +{nice}'}...")
        with tempfile.TemporaryDirectory() as folder, _competitor(nice):
            load = os.getloadavg()[0]
            timings = runs[how](config, ResultStore(folder)).timings
        return {"minima": timings["minima"], "paths": timings["paths"],
                "minima + paths": timings["minima"] + timings["paths"]}, load

    idle = {how: measure(how, None) for how in runs}
    rows = []
    for how, nice in [(job, WORKER_NICE), (job, 0), (inline, 0)]:
        (quiet, load_idle), (busy, load_busy) = idle[how], measure(how, nice)
        for stage in quiet:
            rows.append({"how": how, "competitor": f"nice +{nice}", "stage": stage,
                         "idle s": quiet[stage], "busy s": busy[stage],
                         "slowdown": busy[stage] / quiet[stage],
                         "load idle/busy": f"{load_idle:.2f}/{load_busy:.2f}"})
    return rows
