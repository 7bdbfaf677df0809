"""Background computation for the dashboard: runs and sweeps worked off by worker processes.

A page never trains while it renders. It submits work to a :class:`JobManager` (one per
Streamlit process, e.g. held by ``st.cache_resource``), polls :meth:`JobManager.status` and
reads finished results from the store (``experiment.load_result``)::

    manager = JobManager(ResultStore())
    job_id = manager.submit_run(config)          # == config.run_id
    manager.status(job_id).fraction              # 0.0 ... 1.0, with an ETA in seconds
    manager.wait(job_id)                         # blocks; pages poll instead

Jobs are computed in worker processes (``spawn``), not in the server's threads: a training
job then cannot starve the pages of the interpreter, and each worker runs at a lower CPU
priority with torch's threads set to the cores it really has
(:func:`~lossbarcode.devices.become_background_worker`; more threads than free cores
oversubscribe them). Each worker is started at its first job and fed by a daemon thread of the
manager, which sends it one job at a time and relays its progress reports over a pipe. Each run
goes through :func:`~lossbarcode.experiment.run_experiment` in the worker, so every finished
stage is saved (atomically) as it completes and a cancelled, failed or killed run resumes from
there next time; the server only reads the store. The same run submitted twice while it is
queued or running is one job; across processes the store's run lock makes the second process
wait and then load. Any exception in a job becomes state ``"failed"`` with a one-line reason,
and so does a worker that dies (killed, crashed); nothing escapes a thread.

:meth:`JobManager.estimate` predicts the time of a run before it starts: the cost model of
:mod:`lossbarcode.cost`, calibrated on the runs finished in the store. A run that cannot fit
in memory is refused when it is submitted.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from typing import Any

import lossbarcode
from lossbarcode._checks import check_int
from lossbarcode.cost import (
    COST_STAGES,
    check_fits,
    device_kind,
    estimate_cost,
    store_calibration,
)
from lossbarcode.experiment import Cancelled, ExperimentConfig, load_result, run_experiment
from lossbarcode.store import ResultStore
from lossbarcode.sweep import sweep_configs

__all__ = ["STATES", "JobManager", "JobStatus", "estimate_cost"]

log = logging.getLogger(__name__)

STATES = ("queued", "running", "done", "failed", "cancelled")
_FINISHED = frozenset({"done", "failed", "cancelled"})
_MIN_TIMED_S = 0.2  # a stage shorter than this says nothing about the pace
_TRUST_AT = 0.05  # stage fraction at which the ETA trusts the observed pace and the model alike
_LOCK_POLL_S = 0.5  # how often a run waiting for another process's lock checks for cancel
_KEEP_FINISHED = 200  # finished jobs remembered per manager (older ones are forgotten)
_POLL_S = 0.1  # how often a manager thread checks its worker's pipe, liveness and cancel
_CANCEL_GRACE_S = 5.0  # a cancelled worker not stopped by then (no progress report) is stopped
_STOP_S = 5.0  # seconds a worker process is given to exit before it is terminated, then killed
# A worker must compute with the server's own package, not another copy on its path.
_PACKAGE = os.path.realpath(lossbarcode.__file__)


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
        pid: the worker process computing (or that computed) the job; None while queued or
            when nothing had to be computed.
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
    pid: int | None = None

    @property
    def finished(self) -> bool:
        """Whether the job is done, failed or cancelled."""
        return self.state in _FINISHED


# --------------------------------------------------------------------------- progress / ETA


class _RunClock:
    """Fraction done and seconds left of one run, from its progress calls.

    Stage weights are the (calibrated) cost model's seconds of the minima and paths stages.
    The current stage's total time blends its observed pace (elapsed / fraction done) with the
    model, trusting the pace more as the stage progresses (weight ``p / (p + _TRUST_AT)``);
    stages not started take the model's seconds scaled by the observed / predicted ratio of
    the stages timed so far. So the ETA starts as the model's and tends to the truth as the run
    progresses. A stage counts as timed once it reported progress before its end and ran
    over ``_MIN_TIMED_S`` (a stage loaded from the store says nothing about speed).
    """

    def __init__(self, weights: dict[str, float], mst: bool, now: float) -> None:
        self.weights = {s: max(float(weights.get(s, 0.0)), 1e-9) for s in COST_STAGES}
        self.mst = mst
        self.stage = ""
        self.p = 0.0  # fraction of the current stage, never decreasing
        self.stepped = False  # whether the current stage reported progress before "done"
        self.stage_start = self.run_start = now
        self.observed = self.predicted = 0.0  # seconds and model seconds of the timed stages

    def update(self, stage: str, done: int, total: int, message: str, now: float) -> None:
        if stage != self.stage:
            if self._timed(now):
                self.observed += (now - self.stage_start) / self.p
                self.predicted += self.weights[self.stage]
            if self.stage:  # the first stage also owns the set-up time before its first report
                self.stage_start = now
            self.stage, self.p, self.stepped = stage, 0.0, False
        frac = self._stage_fraction(stage, done, total, message)
        self.stepped = self.stepped or (0 < frac < 1)
        self.p = max(self.p, frac)

    def _stage_fraction(self, stage: str, done: int, total: int, message: str) -> float:
        if stage not in COST_STAGES or message == "done":
            return 1.0 if stage else 0.0
        if stage == "paths" and message in ("screen", "profile"):
            return 0.0  # markers around the optimisation, not steps of it
        frac = min(max(done / total, 0.0), 1.0) if total > 0 else 0.0
        if stage == "paths" and self.mst:
            # "mst" optimises the tree first, then the shortcuts: count each as half.
            frac = 0.5 * frac if message == "tree" else 0.5 + 0.5 * frac
        return frac

    def _timed(self, now: float) -> bool:
        """Whether the current stage's pace is informative."""
        return (self.stage in self.weights and self.stepped and self.p > 0
                and now - self.stage_start > _MIN_TIMED_S)

    def fraction(self) -> float:
        if self.stage not in COST_STAGES:
            return 1.0 if self.stage else 0.0
        i = COST_STAGES.index(self.stage)
        before = sum(self.weights[s] for s in COST_STAGES[:i])
        return (before + self.weights[self.stage] * self.p) / sum(self.weights.values())

    def eta(self, now: float) -> float:
        """Estimated seconds left (before the first report: the model's whole run)."""
        if self.stage and self.stage not in COST_STAGES:
            return 0.0
        ratio = self.observed / self.predicted if self.predicted > 0 else 1.0
        if not self.stage:
            return ratio * sum(self.weights.values())
        weight, spent, p = self.weights[self.stage], now - self.stage_start, self.p
        total = max(weight * ratio, spent)  # overdue without progress: as long again
        if self._timed(now):
            trust = p / (p + _TRUST_AT)
            total = trust * spent / p + (1 - trust) * total
            ratio = (self.observed + total) / (self.predicted + weight)
        later = COST_STAGES[COST_STAGES.index(self.stage) + 1:]
        return (1 - p) * total + ratio * sum(self.weights[s] for s in later)


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
        self.pid: int | None = None
        # Sweep bookkeeping: estimated seconds per run (0 if already stored), current run.
        self.weights = [1.0] * len(configs)
        self.index = 0
        self.clock: _RunClock | None = None
        self.run_start = 0.0  # when the current run started
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
            eta_s=eta, error=self.error, run_ids=self.run_ids, pid=self.pid,
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


# --------------------------------------------------------------------------- worker process


class _Worker:
    """One worker process (``spawn``: a fresh interpreter, no state shared with the server's
    threads) and the pipe to it; owned by one of the manager's threads."""

    def __init__(self, store: ResultStore) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.cancel = context.Event()
        self.process = context.Process(target=_serve, args=(child, self.cancel, store),
                                       name="lossbarcode-worker", daemon=True)
        self.process.start()
        child.close()  # the worker's end lives in the worker: EOF here once it exits
        self.pid: int = self.process.pid

    def stop(self) -> None:
        """Terminate the process now (a computation that does not listen, or a shutdown):
        stages are saved atomically, so finished ones stay saved."""
        for signal_it in (self.process.terminate, self.process.kill):
            if not self.process.is_alive():
                break
            signal_it()
            self.process.join(_STOP_S)
        self.conn.close()

    def close(self) -> None:
        """Ask the process to exit after its current task, then stop it if it does not."""
        try:
            self.conn.send(None)
        except OSError:  # already gone
            pass
        self.process.join(_STOP_S)
        self.stop()

    def ended(self) -> str:
        """How the process ended, e.g. ``"killed by signal SIGKILL"``."""
        self.process.join(_STOP_S)
        code = self.process.exitcode
        if code is None:
            return "stopped answering"
        if code < 0:
            try:
                return f"killed by signal {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exited with code {code}"


def _serve(conn: Connection, cancel: Event, store: ResultStore) -> None:
    """The worker process: compute the jobs sent over ``conn`` one at a time, reporting every
    step back over it, until it sends None or closes."""
    from lossbarcode.devices import become_background_worker

    become_background_worker()
    try:
        conn.send(("ready", os.getpid(), _PACKAGE))  # the worker's own import of the package
        while True:
            try:
                task = conn.recv()
            except EOFError:  # the server went away
                return
            if task is None:
                return
            conn.send(("end", *_compute(conn, cancel, store, *task)))
    except OSError:  # the pipe broke: the server is gone, nobody to report to
        return


def _compute(conn: Connection, cancel: Event, store: ResultStore, job_id: str, kind: str,
             configs: list[ExperimentConfig]) -> tuple[str, str | None]:
    """Run a job's configs in the worker; returns its final state and one-line error."""
    try:
        if kind == "sweep":
            conn.send(("weights", _sweep_weights(store, configs)))
        for index, config in enumerate(configs):
            _run_config(conn, cancel, store, index, config)
    except Cancelled:
        return "cancelled", None
    except Exception as err:  # reported in the status, never raised
        expected = isinstance(err, ValueError | FileNotFoundError | TimeoutError)
        log.log(logging.WARNING if expected else logging.ERROR, "job %s failed: %s", job_id,
                err, exc_info=not expected)
        return "failed", _one_line(err)
    return "done", None


def _estimate(store: ResultStore, config: ExperimentConfig) -> dict[str, Any]:
    return estimate_cost(config, store_calibration(store, device_kind(config), config))


def _sweep_weights(store: ResultStore, configs: list[ExperimentConfig]) -> list[float]:
    """Weights of a sweep's runs: estimated seconds, 0 for runs already stored."""
    weights = []
    for config in configs:
        if store.exists(config.run_id):
            weights.append(0.0)
            continue
        try:
            weights.append(max(_estimate(store, config)["seconds"], 1e-3))
        except Exception:  # the estimate only steers the progress bar
            weights.append(1.0)
    return weights if sum(weights) > 0 else [1.0] * len(weights)


def _run_config(conn: Connection, cancel: Event, store: ResultStore, index: int,
                config: ExperimentConfig) -> None:
    """One run of a job, in the worker; stops with :class:`Cancelled` at the first progress
    report after ``cancel`` is set."""
    if cancel.is_set():
        raise Cancelled("cancelled")
    try:
        weights = _estimate(store, config)["stages"]
    except Exception:  # fall back to equal weights
        weights = dict.fromkeys(COST_STAGES, 1.0)
    conn.send(("run", index, weights))
    reported = False

    def progress(stage: str, done: int, total: int, message: str) -> None:
        nonlocal reported
        reported = True
        if cancel.is_set():
            raise Cancelled("cancelled")
        conn.send(("progress", stage, int(done), int(total), message))

    while True:
        try:
            run_experiment(config, store, progress, lock_timeout=_LOCK_POLL_S)
            break
        except TimeoutError:
            if reported:
                raise  # not the run lock: a real failure inside the computation
            if cancel.is_set():
                raise Cancelled("cancelled") from None
            conn.send(("waiting",))
    conn.send(("ran", index, reported))


# --------------------------------------------------------------------------- manager


class JobManager:
    """Runs and sweeps computed in ``workers`` background worker processes, saved in
    ``store``; one server thread per worker relays its progress.

    Thread-safe; all methods return quickly except :meth:`wait` and :meth:`shutdown`.
    """

    def __init__(self, store: ResultStore, workers: int = 1) -> None:
        check_int(workers, "workers", 1)
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

        A run already finished in the store is a ``"done"`` job at once; a run already queued
        or running here returns that same job.
        """
        self._check_memory([config])
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
        self._check_memory(configs)
        digest = hashlib.sha256(",".join(c.run_id for c in configs).encode()).hexdigest()
        return self._submit(f"sweep-{digest[:16]}", "sweep", configs)

    def estimate(self, config: ExperimentConfig) -> dict[str, Any]:
        """:func:`~lossbarcode.cost.estimate_cost` calibrated on this manager's store."""
        return _estimate(self.store, config)

    def _check_memory(self, configs: Sequence[ExperimentConfig]) -> None:
        """``ValueError`` (what to lower) if a run not stored yet cannot fit in memory."""
        for config in configs:
            if not self.store.exists(config.run_id):
                check_fits(config)

    def _submit(self, job_id: str, kind: str, configs: list[ExperimentConfig]) -> str:
        stored = all(_verified(self.store, c.run_id) for c in configs)
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
        """Stop a job: a queued one at once, a running one at its next progress report, or
        after ``_CANCEL_GRACE_S`` by stopping its worker process (finished stages stay saved).
        Unknown or finished jobs are left alone."""
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
        the queue drain) and join the threads, which end their worker processes (up to
        ``timeout`` seconds)."""
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

    # -- server threads: each feeds one worker process and relays its reports ---------------

    def _work(self) -> None:
        worker: _Worker | None = None
        try:
            while True:
                job = self._queue.get()
                if job is None:
                    return
                try:
                    worker = self._execute(job, worker)
                except Exception:  # a thread must outlive any bug in bookkeeping
                    log.exception("job %s: unexpected error in the job manager", job.job_id)
        finally:
            if worker is not None:
                worker.close()

    def _execute(self, job: _Job, worker: _Worker | None) -> _Worker | None:
        """Run ``job`` in ``worker`` (a new one if None); returns the worker, or None when it
        is gone (killed, crashed, or stopped by a cancel)."""
        with self._lock:
            if job.state != "queued":
                return worker  # cancelled while queued
            job.state, job.started = "running", time.perf_counter()
        try:
            if worker is None:
                worker = _Worker(self.store)
            worker.cancel.clear()
            with self._lock:
                job.pid = worker.pid
            state, error = self._follow(job, worker)
        except Exception as err:  # e.g. no process could be started
            log.exception("job %s: the worker process failed", job.job_id)
            state, error = "failed", _one_line(err)
            if worker is not None:  # it may still be computing: never send it another job
                worker.stop()
        if worker is not None and not worker.process.is_alive():
            worker.stop()  # closes the pipe
            worker = None
        if error is not None and job.kind == "sweep":  # say which run of the grid failed
            error = f"{_sweep_stage(job)} ({_label(job.configs[job.index])}): {error}"
        with self._lock:
            job.finish(state, time.perf_counter(), error)
        return worker

    def _follow(self, job: _Job, worker: _Worker) -> tuple[str, str | None]:
        """Send ``job`` to ``worker`` and relay its reports until it ends; returns the job's
        final state and one-line error. A cancel is passed on at once; a worker that has not
        stopped ``_CANCEL_GRACE_S`` later is stopped. A worker that dies fails the job."""
        asked: float | None = None  # when the cancel was passed on
        try:
            worker.conn.send((job.job_id, job.kind, job.configs))
            while True:
                if job.cancel.is_set() and asked is None:
                    worker.cancel.set()
                    asked = time.perf_counter()
                if asked is not None and time.perf_counter() - asked > _CANCEL_GRACE_S:
                    worker.stop()
                    return "cancelled", None
                if not worker.conn.poll(_POLL_S):
                    # A report sent just before a clean exit is still read first.
                    if worker.process.is_alive() or worker.conn.poll(0):
                        continue
                    break
                message = worker.conn.recv()
                if message[0] == "end":
                    return message[1], message[2]
                problem = self._relay(job, message)
                if problem is not None:
                    worker.stop()
                    return "failed", problem
        except (EOFError, OSError):  # the pipe closed: the worker is gone
            pass
        how = worker.ended()
        worker.stop()
        if asked is not None:
            return "cancelled", None
        return "failed", (f"the worker process (pid {worker.pid}) {how} while computing this "
                          "job; finished stages are kept: run it again to resume")

    def _relay(self, job: _Job, message: tuple) -> str | None:
        """Apply one report of the worker to ``job``; returns why the job cannot go on, or
        None."""
        kind, *body = message
        now = time.perf_counter()
        with self._lock:
            if kind == "ready":
                pid, package = body
                if package != _PACKAGE:
                    return (f"the worker process (pid {pid}) imported lossbarcode from "
                            f"{os.path.dirname(package)}, not {os.path.dirname(_PACKAGE)} "
                            "like this server: start the server from the folder of the "
                            "package it should use")
            elif kind == "weights":
                job.weights = list(body[0])
            elif kind == "run":
                index, weights = body
                config = job.configs[index]
                job.index = index
                job.clock = _RunClock(weights, config.pairs == "mst", now)
                job.run_start = now
                job.done = job.total = 0
                job.stage = _sweep_stage(job) if job.kind == "sweep" else ""
                job.message = f"{_prefix(job)}starting: loading the data and the model"
            elif kind == "progress":
                stage, done, total, text = body
                if job.clock is not None:
                    job.clock.update(stage, done, total, text, now)
                job.done, job.total = done, total
                if job.kind == "run":
                    job.stage, job.message = stage, text
                else:
                    job.message = f"{_prefix(job)}{stage}: {text}"
            elif kind == "waiting":
                job.message = (f"{_prefix(job)}waiting: another job or process is computing "
                               "this run")
            elif kind == "ran":
                index, reported = body
                if not reported:  # finished meanwhile, e.g. by another process
                    job.message = f"{_prefix(job)}loaded from the store"
                if job.kind == "sweep" and job.weights[index] > 0:
                    job.spent += now - job.run_start
                    job.spent_weight += job.weights[index]
        return None


def _verified(store: ResultStore, run_id: str) -> bool:
    """Whether ``run_id`` has a finished result that verifies. Its files alone do not say so:
    an edited or damaged result is computed again by its job, as ``lossbarcode run`` does."""
    if not store.exists(run_id):
        return False
    try:
        return load_result(store, run_id, warn=False) is not None
    except Exception:  # e.g. a newer format: the job reports it
        return False


def _prefix(job: _Job) -> str:
    """A sweep's messages name the run they are about."""
    return f"{_label(job.configs[job.index])} · " if job.kind == "sweep" else ""


def _cancel_locked(job: _Job) -> bool:
    """Ask ``job`` to stop (the manager's lock held); a queued job ends at once (True)."""
    job.cancel.set()
    if job.state == "queued":
        job.finish("cancelled", time.perf_counter())
        return True
    return False
