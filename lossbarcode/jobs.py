"""Background computation for the dashboard: runs and sweeps worked off by worker threads.

A page never trains while it renders. It submits work to a :class:`JobManager` (one per
Streamlit process, e.g. held by ``st.cache_resource``), polls :meth:`JobManager.status` and
reads finished results from the store (``experiment.load_result``)::

    manager = JobManager(ResultStore())
    job_id = manager.submit_run(config)          # == config.run_id
    manager.status(job_id).fraction              # 0.0 ... 1.0, with an ETA in seconds
    manager.wait(job_id)                         # blocks; pages poll instead

Workers are daemon threads fed by a queue. Each run goes through
:func:`~lossbarcode.experiment.run_experiment`, so every finished stage is saved as it
completes and a cancelled or failed run resumes from there next time. The same run submitted
twice while it is queued or running is one job; across processes the store's run lock makes the
second process wait and then load. Any exception in a job becomes state ``"failed"`` with a
one-line reason; nothing escapes a worker thread.

:func:`estimate_cost` predicts the time of a run before it starts, from a FLOP count and a
matmul throughput measured once per process: an order-of-magnitude estimate, not a promise.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lossbarcode.choices import (
    PATH_CYCLE_STEPS,
    PATH_REFINE_POINTS,
    PATH_REFINE_ROUNDS,
    VECTOR_DATASETS,
)
from lossbarcode.experiment import Cancelled, ExperimentConfig, run_experiment
from lossbarcode.store import ResultStore
from lossbarcode.sweep import sweep_configs

__all__ = ["STATES", "JobManager", "JobStatus", "estimate_cost"]

log = logging.getLogger(__name__)

STATES = ("queued", "running", "done", "failed", "cancelled")
_FINISHED = frozenset({"done", "failed", "cancelled"})
_RUN_STAGES = ("minima", "paths")  # the stages that cost time, in order; "result" is ~free
_LOCK_POLL_S = 0.5  # how often a run waiting for another process's lock checks for cancel
_KEEP_FINISHED = 200  # finished jobs remembered per manager (older ones are forgotten)


@dataclass(frozen=True)
class JobStatus:
    """A snapshot of one job.

    Attributes:
        job_id: the run id for a run; ``"sweep-<16 hex>"`` for a sweep.
        kind: ``"run"`` or ``"sweep"``.
        state: one of :data:`STATES`.
        stage: run: ``"minima"``, ``"paths"``, ``"result"`` or ``""`` (not started);
            sweep: ``"run 3/12"``.
        done, total: progress within the current stage (as reported by the computation).
        message: e.g. ``"mean minibatch loss 0.31"``; for a sweep prefixed with the run's
            ``"width 16 depth 2 seed 1"``.
        fraction: overall progress estimate in [0, 1].
        elapsed_s: seconds since the job started running (0 while queued).
        eta_s: estimated seconds left; None until progress allows an estimate.
        error: one-line reason when failed, else None.
        run_ids: the runs this job produces, in grid order (one for a run).
    """

    job_id: str
    kind: str
    state: str
    stage: str
    done: int
    total: int
    message: str
    fraction: float
    elapsed_s: float
    eta_s: float | None
    error: str | None
    run_ids: tuple[str, ...]

    @property
    def finished(self) -> bool:
        """Whether the job is done, failed or cancelled."""
        return self.state in _FINISHED


# --------------------------------------------------------------------------- progress / ETA


class _RunClock:
    """Fraction done and seconds left of one run, from its progress calls.

    Stage weights are the cost model's estimated seconds of the minima and paths stages. The
    ETA extrapolates the rate of the current stage (seconds per unit of weight) to what is left
    of it and to the later stages; before the current stage has progressed it reuses the rate
    of the previous stage, if that stage really computed (a loaded stage says nothing).
    """

    def __init__(self, weights: dict[str, float], mst: bool, now: float) -> None:
        self.weights = {s: max(float(weights.get(s, 0.0)), 1e-9) for s in _RUN_STAGES}
        self.mst = mst
        self.stage = ""
        self.p = 0.0  # fraction of the current stage, never decreasing
        self.stage_start = self.run_start = now
        self.rate: float | None = None  # seconds per unit of weight, last reliable value

    def update(self, stage: str, done: int, total: int, message: str, now: float) -> None:
        if stage != self.stage:
            self._measure(now)
            if self.stage:  # the first stage also owns the set-up time before its first report
                self.stage_start = now
            self.stage, self.p = stage, 0.0
        self.p = max(self.p, self._stage_fraction(stage, done, total, message))

    def _stage_fraction(self, stage: str, done: int, total: int, message: str) -> float:
        if stage not in _RUN_STAGES or message == "done":
            return 1.0 if stage else 0.0
        if stage == "paths" and message in ("screen", "profile"):
            return 0.0  # markers around the optimisation, not steps of it
        frac = min(max(done / total, 0.0), 1.0) if total > 0 else 0.0
        if stage == "paths" and self.mst:
            # "mst" optimises the tree first, then the shortcuts: count each as half.
            frac = 0.5 * frac if message == "tree" else 0.5 + 0.5 * frac
        return frac

    def _measure(self, now: float) -> float | None:
        """Rate of the current stage if it ran long enough to tell; remembers it."""
        spent = now - self.stage_start
        if self.stage in self.weights and self.p > 0 and spent > 0.2:
            self.rate = spent / (self.p * self.weights[self.stage])
        return self.rate

    def fraction(self) -> float:
        if self.stage not in _RUN_STAGES:
            return 1.0 if self.stage else 0.0
        i = _RUN_STAGES.index(self.stage)
        before = sum(self.weights[s] for s in _RUN_STAGES[:i])
        return (before + self.weights[self.stage] * self.p) / sum(self.weights.values())

    def eta(self, now: float) -> float | None:
        if self.stage not in _RUN_STAGES:
            return 0.0 if self.stage else None
        rate = self._measure(now)
        if rate is None:
            return None
        i = _RUN_STAGES.index(self.stage)
        left = self.weights[self.stage] * (1 - self.p) + sum(
            self.weights[s] for s in _RUN_STAGES[i + 1 :])
        return rate * left


class _Job:
    """Mutable state of one job; every field is read and written under the manager's lock."""

    def __init__(self, job_id: str, kind: str, configs: list[ExperimentConfig], seq: int):
        self.job_id, self.kind, self.configs, self.seq = job_id, kind, configs, seq
        self.run_ids = tuple(c.run_id for c in configs)
        self.state = "queued"
        self.stage, self.done, self.total, self.message = "", 0, 0, ""
        self.error: str | None = None
        self.started: float | None = None
        self.ended: float | None = None
        self.cancel = threading.Event()
        self.finished = threading.Event()
        # Sweep bookkeeping: estimated seconds per run (0 if already stored), current run.
        self.weights = [1.0] * len(configs)
        self.index = 0
        self.clock: _RunClock | None = None
        self.spent = 0.0  # seconds spent on the sweep's finished runs that had weight
        self.spent_weight = 0.0

    def finish(self, state: str, now: float, error: str | None = None) -> None:
        self.state, self.error, self.ended = state, error, now
        if state == "done":
            self.index = len(self.configs) - 1
            self.done, self.total = max(self.done, 1), max(self.total, 1)
            self.stage = "result" if self.kind == "run" else _sweep_stage(self)
            self.message = self.message or "loaded from the store"
        self.finished.set()

    def snapshot(self, now: float) -> JobStatus:
        fraction, eta = self._progress(now)
        ended = self.ended if self.ended is not None else now
        return JobStatus(
            job_id=self.job_id, kind=self.kind, state=self.state, stage=self.stage,
            done=self.done, total=self.total, message=self.message,
            fraction=float(min(max(fraction, 0.0), 1.0)),
            elapsed_s=0.0 if self.started is None else max(0.0, ended - self.started),
            eta_s=eta, error=self.error, run_ids=self.run_ids,
        )

    def _progress(self, now: float) -> tuple[float, float | None]:
        if self.state == "done":
            return 1.0, 0.0
        clock = self.clock
        run_f = clock.fraction() if clock else 0.0
        run_eta = clock.eta(now) if clock and self.state == "running" else None
        if self.kind == "run":
            return run_f, run_eta
        w = self.weights
        total = sum(w)
        frac = (sum(w[: self.index]) + w[self.index] * run_f) / total
        if self.state != "running" or run_eta is None:
            return frac, None
        later = sum(w[self.index + 1 :])
        if self.spent_weight > 0:
            per_weight = self.spent / self.spent_weight
        else:  # no finished run to learn from: the current run's projected total
            run_elapsed = now - (clock.run_start if clock else now)
            per_weight = (run_elapsed + run_eta) / w[self.index]
        return frac, run_eta + per_weight * later


def _sweep_stage(job: _Job) -> str:
    return f"run {job.index + 1}/{len(job.configs)}"


def _label(config: ExperimentConfig) -> str:
    return f"width {config.width} depth {config.depth} seed {config.seed}"


def _one_line(err: BaseException) -> str:
    """The reason of a failure on one line: ValueError/FileNotFoundError messages verbatim
    (they are written for the user), other exceptions prefixed with their type."""
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    if isinstance(err, ValueError | FileNotFoundError):
        return text or type(err).__name__
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


# --------------------------------------------------------------------------- manager


class JobManager:
    """Runs and sweeps computed in ``workers`` background threads, saved in ``store``.

    Thread-safe; all methods return quickly except :meth:`wait` and :meth:`shutdown`.
    """

    def __init__(self, store: ResultStore, workers: int = 1) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        self.store = store
        self._lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._seq = itertools.count()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"lossbarcode-jobs-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def __repr__(self) -> str:
        return f"JobManager({self.store!r}, workers={len(self._threads)})"

    def __enter__(self) -> JobManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- submitting ------------------------------------------------------------------------

    def submit_run(self, config: ExperimentConfig) -> str:
        """Queue one run; returns its job id, which is ``config.run_id``.

        Raises ``ValueError`` for an invalid config. A run already finished in the store is a
        ``"done"`` job at once; a run already queued or running here returns that same job.
        """
        config = config.validate()
        return self._submit(config.run_id, "run", [config])

    def submit_sweep(
        self,
        base: ExperimentConfig,
        widths: Sequence[int] | None = None,
        depths: Sequence[int] | None = None,
        seeds: Sequence[int] | None = None,
        design: str = "grid",
    ) -> str:
        """Queue the sweep widths x depths x seeds (None keeps the base value; ``design`` as in
        :func:`~lossbarcode.sweep.sweep_configs`) as one job.

        Returns ``"sweep-<16 hex>"``, a hash of the grid's run ids, so the same grid submitted
        again while it runs is the same job. Raises ``ValueError`` for an invalid grid.
        """
        configs = sweep_configs(base, widths, depths, seeds, design)
        digest = hashlib.sha256(",".join(c.run_id for c in configs).encode()).hexdigest()
        return self._submit(f"sweep-{digest[:16]}", "sweep", configs)

    def _submit(self, job_id: str, kind: str, configs: list[ExperimentConfig]) -> str:
        stored = all(self.store.exists(c.run_id) for c in configs)
        with self._lock:
            if self._closed:
                raise RuntimeError("this JobManager was shut down; create a new one")
            old = self._jobs.get(job_id)
            if old is not None and not old.finished.is_set():
                return job_id
            job = _Job(job_id, kind, configs, next(self._seq))
            self._jobs.pop(job_id, None)  # re-insert: newest last
            self._jobs[job_id] = job
            if stored:
                job.finish("done", time.perf_counter())
            else:
                self._queue.put(job)
            self._forget_old()
        return job_id

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.finished.is_set()]
        for job in sorted(finished, key=lambda j: j.seq)[: max(0, len(finished) - _KEEP_FINISHED)]:
            del self._jobs[job.job_id]

    # -- querying --------------------------------------------------------------------------

    def status(self, job_id: str) -> JobStatus | None:
        """The job's current status, or None for an unknown id."""
        with self._lock:
            job = self._jobs.get(job_id)
            return None if job is None else job.snapshot(time.perf_counter())

    def jobs(self) -> list[JobStatus]:
        """Every job this manager remembers, newest first."""
        now = time.perf_counter()
        with self._lock:
            return [j.snapshot(now) for j in sorted(self._jobs.values(), key=lambda j: -j.seq)]

    def cancel(self, job_id: str) -> None:
        """Stop a job: a queued one at once, a running one at its next progress report
        (finished stages stay saved). Unknown or finished jobs are left alone."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.finished.is_set():
                return
            if not _cancel_locked(job):
                job.message = "cancelling..."

    def wait(self, job_id: str, timeout: float | None = None) -> JobStatus:
        """Block until the job finishes or ``timeout`` seconds pass; returns its status.

        Raises ``KeyError`` for an unknown job id.
        """
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise KeyError(f"no job {job_id!r} in this manager")
        job.finished.wait(timeout)
        with self._lock:
            return job.snapshot(time.perf_counter())

    def shutdown(self, cancel: bool = True, timeout: float | None = None) -> None:
        """Stop accepting work; cancel unfinished jobs (unless ``cancel=False``, which lets
        the queue drain) and join the workers (up to ``timeout`` seconds)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                if cancel:
                    for job in list(self._jobs.values()):
                        if not job.finished.is_set():
                            _cancel_locked(job)
                for _ in self._threads:
                    self._queue.put(None)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout)

    # -- workers ---------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                self._execute(job)
            except Exception:  # a worker must outlive any bug in bookkeeping
                log.exception("job %s: unexpected error in the job manager", job.job_id)

    def _execute(self, job: _Job) -> None:
        with self._lock:
            if job.state != "queued":
                return  # cancelled while queued
            job.state, job.started = "running", time.perf_counter()
        try:
            if job.kind == "sweep":
                self._prepare_sweep(job)
            for i, config in enumerate(job.configs):
                self._run_one(job, i, config)
        except Cancelled:
            state, error = "cancelled", None
        except Exception as err:  # reported in the status, never raised
            expected = isinstance(err, ValueError | FileNotFoundError | TimeoutError)
            log.log(logging.WARNING if expected else logging.ERROR, "job %s failed: %s",
                    job.job_id, err, exc_info=not expected)
            state, error = "failed", _one_line(err)
            if job.kind == "sweep":  # say which run of the grid failed
                error = f"{_sweep_stage(job)} ({_label(job.configs[job.index])}): {error}"
        else:
            state, error = "done", None
        with self._lock:
            job.finish(state, time.perf_counter(), error)

    def _prepare_sweep(self, job: _Job) -> None:
        """Weights of the sweep's runs: estimated seconds, 0 for runs already stored."""
        weights = []
        for config in job.configs:
            if self.store.exists(config.run_id):
                weights.append(0.0)
                continue
            try:
                weights.append(max(estimate_cost(config)["seconds"], 1e-3))
            except Exception:  # the estimate only steers the progress bar
                weights.append(1.0)
        if sum(weights) <= 0:
            weights = [1.0] * len(weights)
        with self._lock:
            job.weights = weights

    def _run_one(self, job: _Job, index: int, config: ExperimentConfig) -> None:
        if job.cancel.is_set():
            raise Cancelled(f"job {job.job_id} was cancelled")
        try:
            parts = _cost_parts(config)
            weights = {"minima": parts["minima_s"], "paths": parts["paths_s"]}
        except Exception:  # fall back to equal weights
            weights = {"minima": 1.0, "paths": 1.0}
        start = time.perf_counter()
        clock = _RunClock(weights, config.pairs == "mst", start)
        prefix = f"{_label(config)} · " if job.kind == "sweep" else ""
        with self._lock:
            job.index, job.clock = index, clock
            job.done = job.total = 0
            job.stage = _sweep_stage(job) if job.kind == "sweep" else ""
            job.message = f"{prefix}starting: loading the data and the model"
        reported = False

        def progress(stage: str, done: int, total: int, message: str) -> None:
            nonlocal reported
            reported = True
            if job.cancel.is_set():
                raise Cancelled(f"job {job.job_id} was cancelled")
            now = time.perf_counter()
            with self._lock:
                clock.update(stage, done, total, message, now)
                job.done, job.total = int(done), int(total)
                if job.kind == "run":
                    job.stage, job.message = stage, message
                else:
                    job.message = f"{prefix}{stage}: {message}"

        while True:
            try:
                run_experiment(config, self.store, progress, lock_timeout=_LOCK_POLL_S)
                break
            except TimeoutError:
                if reported:
                    raise  # not the run lock: a real failure inside the computation
                if job.cancel.is_set():
                    raise Cancelled(f"job {job.job_id} was cancelled") from None
                with self._lock:
                    job.message = f"{prefix}waiting: another job or process is computing this run"
        with self._lock:
            if not reported:  # finished meanwhile, e.g. by another process
                job.message = f"{prefix}loaded from the store"
            if job.kind == "sweep" and job.weights[index] > 0:
                job.spent += time.perf_counter() - start
                job.spent_weight += job.weights[index]


def _cancel_locked(job: _Job) -> bool:
    """Ask ``job`` to stop (the manager's lock held); a queued job ends at once (True)."""
    job.cancel.set()
    if job.state == "queued":
        job.finish("cancelled", time.perf_counter())
        return True
    return False


# --------------------------------------------------------------------------- cost model

# Per dataset: (input shape, outputs, full train size, full test size). Synthetic sets have no
# "full" size (they are generated at n_train, default 512); the text vocabulary is a guess.
_DATA = {
    "digits": ((1, 8, 8), 10, 1438, 359),
    "spirals": ((2,), 2, 512, 512),
    "blobs": ((2,), 4, 512, 512),
    "teacher": ((8,), 1, 512, 512),
    "modadd": ((3,), 24, 264, 265),
    "text": ((32,), 96, 4096, 1024),
    "mnist": ((1, 28, 28), 10, 60000, 10000),
    "fashion_mnist": ((1, 28, 28), 10, 60000, 10000),
    "cifar10": ((3, 32, 32), 10, 50000, 10000),
    "cifar100": ((3, 32, 32), 100, 50000, 10000),
    "svhn": ((3, 32, 32), 10, 73257, 26032),
}
# Share of a plain matmul's throughput that the batched programs reach, calibrated on the
# default digits run at fcn widths 8-256 on 2 CPU cores: about 0.4 for the fcn family (its
# hand-derived wide-net gradient, lossbarcode.wide) and, measured before that gradient existed,
# about 0.2 through vmap + autograd, which every other family uses. Small networks are bound by
# a fixed cost per step instead (one minima step: K networks; one path step: every image).
_EFFICIENCY = {"fcn": 0.4}
_AUTOGRAD_EFFICIENCY = 0.2
_STEP_OVERHEAD_S = {"cpu": 0.7e-3, "cuda": 0.3e-3}  # dispatch per minima training step
_PATH_STEP_OVERHEAD_S = {"cpu": 3e-3, "cuda": 2e-3}  # dispatch per path optimisation step
_SETUP_S = 1.0  # data loading, landscape, saving
# connect()'s defaults, which run_experiment does not override.
_PATH_BATCH, _NEB_CYCLES, _NEB_INSERT, _BEZIER_T, _SCREEN_POINTS = 128, 3, 2, 4, 9
_REFINE = 2 * PATH_REFINE_ROUNDS * PATH_REFINE_POINTS  # added around a profile's top
# Converging paths, measured on the default digits fcn runs at widths 4-256: minibatch steps
# per path, and the share of paths that need the full-batch phase and its typical length.
_EXPECTED_PATH_STEPS, _FINAL_SHARE, _FINAL_STEPS_TYPICAL = 800, 0.5, 20

_throughput_cache: dict[tuple[str, str], float] = {}
_throughput_lock = threading.Lock()


def estimate_cost(config: ExperimentConfig) -> dict[str, Any]:
    """Rough cost of running ``config``, before running it (milliseconds to compute).

    Returns ``{"seconds", "n_params", "n_pairs", "flops"}``: ``flops`` counts training the K
    minima (forward + backward = 3 forward passes per example: about ``6 * params *
    examples per step * K * steps`` for dense layers; convolutions are counted per output
    position) and the paths (optimisation of every pair's images plus the barrier evaluation
    along them on the evaluation set); ``seconds`` divides it by a matmul throughput measured
    once per process and device and adds a per-step overhead. It is an estimate -- expect it to
    be off by a factor of a few either way (small networks are overhead-bound; the text
    vocabulary is guessed). Raises ``ValueError`` for an invalid config.
    """
    parts = _cost_parts(config.validate())
    return {"seconds": parts["minima_s"] + parts["paths_s"], "n_params": parts["n_params"],
            "n_pairs": parts["n_pairs"], "flops": parts["flops"]}


@functools.lru_cache(maxsize=512)
def _cost_parts(config: ExperimentConfig) -> dict[str, Any]:
    """The cost model, split into the minima and paths stages (seconds each)."""
    shape, n_out, full_train, full_test = _DATA[config.dataset]
    if config.dataset in VECTOR_DATASETS:
        n_train, n_test = config.n_train or full_train, config.n_test or full_test
    else:
        n_train = min(config.n_train or full_train, full_train)
        n_test = min(config.n_test or full_test, full_test)
    n_eval = min(config.eval_subset or n_train, n_train)
    n_params, fwd = _model_cost(config, shape, n_out)
    k = config.k

    batch = min(config.batch_size, n_train)
    minima_flops = 3 * fwd * batch * k * config.steps + fwd * k * (n_eval + n_test)

    n_all = k * (k - 1) // 2
    n_pairs = n_all if config.pairs == "all" or k == 2 else min(n_all, 2 * (k - 1))
    e, img = config.eval_points, config.images
    path_batch = min(_PATH_BATCH, n_eval)

    def chain_points(n: int) -> int:  # loss profile points along a chain of n images
        return (n - 1) * (e + 1) + 1

    evals = n_pairs * (chain_points(img + 2) + _REFINE)  # the straight line is always profiled
    train_points = 0.0  # interior image-steps of the optimisation (minibatch)
    full_points = 0.0  # the same on the whole evaluation set (NEB's final phase)
    fixed = config.path_steps
    # Converging paths stop when their barrier is steady: typically after about
    # _EXPECTED_PATH_STEPS minibatch steps (never more than the cap).
    steps = fixed if fixed is not None else min(config.path_max_steps, _EXPECTED_PATH_STEPS)
    checks = 3 if fixed is not None else steps / PATH_CYCLE_STEPS
    if config.path_method == "neb":
        final = img + 2 + 2 * _NEB_INSERT
        if fixed is not None:
            bounds = [round(fixed * c / _NEB_CYCLES) for c in range(_NEB_CYCLES + 1)]
            train_points = sum((img + _NEB_INSERT * c) * (bounds[c + 1] - bounds[c])
                               for c in range(_NEB_CYCLES))
        else:
            train_points = (final - 2) * steps
            full_points = (final - 2) * _FINAL_SHARE * _FINAL_STEPS_TYPICAL
            checks += _FINAL_SHARE * _FINAL_STEPS_TYPICAL / 10
        evals += n_pairs * ((checks + 1) * (chain_points(final) + _REFINE)
                            + 2 * (final - 1))  # + insertion checks
        evals += n_pairs * (final - 2) * 3  # the final perpendicular gradient (with backward)
    elif config.path_method == "bezier":
        train_points = _BEZIER_T * steps
        evals += n_pairs * (checks + 1) * (chain_points(img + 2) + _REFINE)
    if config.pairs == "mst" and k > 2:
        evals += n_all * _SCREEN_POINTS
    paths_flops = (3 * fwd * n_pairs * (path_batch * train_points + n_eval * full_points)
                   + fwd * n_eval * evals)

    device = _device(config)
    rate = _throughput(device, config.dtype) * _EFFICIENCY.get(config.arch, _AUTOGRAD_EFFICIENCY)
    kind = "cuda" if device.startswith("cuda") else "cpu"
    path_steps = steps if config.path_method != "linear" else 0
    return {
        "minima_s": _SETUP_S + minima_flops / rate + _STEP_OVERHEAD_S[kind] * config.steps,
        "paths_s": paths_flops / rate + _PATH_STEP_OVERHEAD_S[kind] * path_steps,
        "n_params": n_params, "n_pairs": n_pairs, "flops": float(minima_flops + paths_flops),
    }


def _device(config: ExperimentConfig) -> str:
    if config.device != "auto":
        return config.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _throughput(device: str, dtype: str) -> float:
    """FLOP/s of a small square matmul on ``device``, measured once per process."""
    key = (device, dtype)
    with _throughput_lock:
        if key not in _throughput_cache:
            try:
                _throughput_cache[key] = _measure_matmul(device, dtype)
            except (RuntimeError, AssertionError) as err:  # e.g. "cuda" without a GPU
                raise ValueError(f"device {device!r} is not usable here ({err})") from err
        return _throughput_cache[key]


def _measure_matmul(device: str, dtype: str) -> float:
    import torch

    dev = torch.device(device)
    n = 256 if dev.type == "cpu" else 2048
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    a = torch.randn(n, n, device=dev, dtype=getattr(torch, dtype))
    b = torch.randn(n, n, device=dev, dtype=getattr(torch, dtype))
    for _ in range(3):  # warm-up: thread pool start, allocations, kernel selection
        a @ b
    sync()
    best = 0.0
    for _ in range(3):  # best of three short trials: other processes may share the device
        reps, start = 0, time.perf_counter()
        while True:
            a @ b
            reps += 1
            sync()
            spent = time.perf_counter() - start
            if spent > 0.01 or reps >= 1000:
                break
        best = max(best, 2.0 * n**3 * reps / max(spent, 1e-9))
    return best


def _model_cost(config: ExperimentConfig, shape: tuple[int, ...], n_out: int) -> tuple[int, float]:
    """``(n_params, forward FLOPs per example)`` of the config's model, without initialising
    (or, for huge models, allocating) its weights.

    Weight-bearing layers cost ``2 * weight size`` per output position; the positions (tokens,
    pixels) do not depend on the width, so they are read off a forward pass of the same
    architecture at a tiny width. Attention adds ``4 * T^2 * width`` per layer.
    """
    import torch
    from torch import nn

    from lossbarcode import models

    tiny = models.build(config.arch, config.heads if config.arch == "transformer" else 2,
                        config.depth, shape, n_out, heads=config.heads, seed=0)
    weighted = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
    positions: dict[str, int] = {}

    def counter(name: str):
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            per_position = module.out_features if isinstance(module, nn.Linear) else (
                module.out_channels)
            positions[name] = positions.get(name, 0) + output.numel() // per_position
        return hook

    handles = [m.register_forward_hook(counter(name)) for name, m in tiny.named_modules()
               if isinstance(m, weighted)]
    dtype = torch.int64 if config.arch == "transformer" else torch.float32
    with torch.no_grad():
        tiny(torch.zeros((1, *shape), dtype=dtype))
    for handle in handles:
        handle.remove()

    full = _build_uninitialised(models.build, config, shape, n_out)
    flops = sum(2.0 * m.weight.numel() * positions.get(name, 0)
                for name, m in full.named_modules() if isinstance(m, weighted))
    if config.arch == "transformer":
        flops += 4.0 * shape[0] ** 2 * config.width * config.depth
    return models.n_params(full), flops


def _build_uninitialised(build: Any, config: ExperimentConfig, shape: tuple[int, ...],
                         n_out: int) -> Any:
    """The full model with uninitialised weights (fast, and untouched memory costs nothing);
    on the meta device if even that allocation fails."""
    import torch

    args = (config.arch, config.width, config.depth, shape, n_out)
    try:
        with _SkipInit():
            return build(*args, heads=config.heads, seed=0)
    except (RuntimeError, MemoryError):
        with torch.device("meta"), _SkipInit():
            return build(*args, heads=config.heads, seed=0)


@functools.cache
def _skip_init_mode() -> type:
    from torch.overrides import TorchFunctionMode

    # Random initialisers: skipping them leaves the (lazily mapped) memory untouched. The meta
    # device is not used by default because its first random/arithmetic op imports
    # torch._dynamo, which takes seconds.
    names = {"normal_", "uniform_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_",
             "xavier_normal_", "trunc_normal_", "orthogonal_"}

    class SkipInit(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if getattr(func, "__name__", "") in names:
                return args[0] if args else kwargs["tensor"]
            return func(*args, **kwargs)

    return SkipInit


class _SkipInit:
    """Context manager: ``torch.nn.init``-style random initialisers do nothing (this thread)."""

    def __enter__(self) -> None:
        self._mode = _skip_init_mode()()
        self._mode.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._mode.__exit__(*exc)

