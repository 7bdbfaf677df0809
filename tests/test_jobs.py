"""Background jobs: runs and sweeps in worker processes, dedupe, cancel, failures, a killed
worker, the worker's priority and threads, cost model."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lossbarcode import devices, jobs
from lossbarcode.experiment import ExperimentConfig, load_result, run_experiment
from lossbarcode.jobs import JobManager, JobStatus
from lossbarcode.store import ResultStore

TINY = ExperimentConfig(n_train=200, n_test=100, width=8, depth=1, k=3, steps=30,
                        batch_size=32, images=2, path_steps=10, eval_points=2, device="cpu")


@pytest.fixture
def store(tmp_path):
    return ResultStore(tmp_path / "results")


@pytest.fixture
def manager(store):
    with JobManager(store) as m:
        yield m


def wait_until(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError("condition not reached in time")


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_run_reaches_done_and_the_result_loads(manager, store):
    job_id = manager.submit_run(TINY)
    assert job_id == TINY.run_id
    first = manager.status(job_id)
    assert isinstance(first, JobStatus) and first.kind == "run"
    assert first.state in ("queued", "running") and first.run_ids == (TINY.run_id,)
    status = manager.wait(job_id, timeout=60)
    assert status.state == "done" and status.finished and status.error is None
    assert status.stage == "result" and status.fraction == 1.0 and status.eta_s == 0.0
    assert status.elapsed_s > 0
    result = load_result(store, job_id)
    assert result is not None and result.run_id == job_id
    assert [s.job_id for s in manager.jobs()] == [job_id]
    # Computed in another process, which stays for the next job at a lower priority.
    assert status.pid is not None and status.pid != os.getpid() and alive(status.pid)
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, status.pid) == min(19, ours + devices.WORKER_NICE)
    again = manager.wait(manager.submit_run(TINY.replace(seed=1)), timeout=60)
    assert again.state == "done" and again.pid == status.pid


def test_same_run_twice_is_one_job_computed_once(store):
    with JobManager(store, workers=2) as manager:
        first = manager.submit_run(TINY)
        second = manager.submit_run(TINY.replace())  # an equal config, another object
        assert first == second
        assert len(manager.jobs()) == 1
        status = manager.wait(first, timeout=60)
        assert status.state == "done" and status.message.startswith("TO-score")  # computed


def test_finished_run_is_done_at_once(manager, store):
    run_experiment(TINY, store)
    status = manager.status(manager.submit_run(TINY))
    assert status.state == "done" and status.fraction == 1.0
    assert status.message == "loaded from the store"
    assert status.pid is None  # no worker process was needed


def test_a_stored_result_that_does_not_verify_is_computed_again(manager, store):
    run_experiment(TINY, store)
    path = store.root / TINY.run_id / "result.json"
    good = load_result(store, TINY.run_id, strict=True)
    path.write_text(path.read_text().replace('"l2"', '"L2"', 1))  # edited: files present
    assert store.exists(TINY.run_id) and load_result(store, TINY.run_id, warn=False) is None
    job = manager.submit_run(TINY)
    assert manager.status(job).state != "done"  # not "loaded from the store"
    assert manager.wait(job, timeout=120).state == "done"
    assert load_result(store, TINY.run_id, strict=True).scores == good.scores


def test_progress_then_cancel_keeps_finished_stages(manager, store):
    job_id = manager.submit_run(TINY.replace(steps=300, path_steps=100_000))
    seen = []

    def paths_with_eta():
        seen.append(manager.status(job_id))
        return seen[-1].finished or (seen[-1].stage == "paths" and seen[-1].eta_s is not None)

    wait_until(paths_with_eta, timeout=60)
    running = [s for s in seen if s.state == "running"]
    fractions = [s.fraction for s in running]
    assert fractions == sorted(fractions) and 0 <= fractions[0] and fractions[-1] < 1
    assert any(s.stage == "minima" and s.total == 300 and "loss" in s.message for s in running)
    assert all(s.eta_s is None or s.eta_s >= 0 for s in running)
    assert running[-1].elapsed_s > 0

    manager.cancel(job_id)
    status = manager.wait(job_id, timeout=30)
    assert status.state == "cancelled" and status.error is None and status.finished
    assert store.has_stage(job_id, "minima")
    assert not store.has_stage(job_id, "paths") and not store.exists(job_id)
    manager.cancel(job_id)  # cancelling a finished job is a no-op
    assert manager.status(job_id).state == "cancelled"


def test_cancel_a_queued_job(manager):
    blocker = manager.submit_run(TINY.replace(path_steps=100_000))
    queued = manager.submit_run(TINY.replace(seed=1))
    assert manager.status(queued).state == "queued"
    manager.cancel(queued)
    assert manager.status(queued).state == "cancelled"
    manager.cancel(blocker)
    assert manager.wait(blocker, timeout=30).state == "cancelled"
    # A cancelled run can be submitted again: a new job under the same id.
    assert manager.submit_run(TINY.replace(seed=1)) == queued
    assert manager.status(queued).state in ("queued", "running")


def test_bad_config_is_refused_at_submit(manager):
    with pytest.raises(ValueError, match="width must be"):
        manager.submit_run(TINY.replace(width=0))
    with pytest.raises(ValueError, match="must not repeat"):
        manager.submit_sweep(TINY, widths=[4, 4])
    assert manager.jobs() == []


def test_failing_run_reports_the_reason(manager, tmp_path):
    empty = tmp_path / "no-data"
    empty.mkdir()
    config = TINY.replace(dataset="mnist", data_root=str(empty))
    status = manager.wait(manager.submit_run(config), timeout=30)
    assert status.state == "failed"
    assert status.error.startswith("dataset 'mnist' not found under") and "\n" not in status.error
    sweep = manager.wait(manager.submit_sweep(config, seeds=[3]), timeout=30)
    assert sweep.state == "failed"
    assert sweep.error.startswith("run 1/1 (width 8 depth 1 seed 3): dataset 'mnist' not found")
    # The worker survived: the next job still runs.
    assert manager.wait(manager.submit_run(TINY), timeout=60).state == "done"


def test_unexpected_exception_becomes_one_line():
    # (The worker reports _one_line of what its run raised; test_failing_run_reports_the_reason
    # goes through a worker.)
    assert jobs._one_line(RuntimeError("first line\nsecond line")) == (
        "RuntimeError: first line second line")
    assert jobs._one_line(ValueError("bad\n width")) == "bad width"


def test_cancel_stops_a_silent_worker_and_the_run_resumes(manager, store, monkeypatch):
    # No grace: the worker process is stopped at once, as one that does not report progress
    # would be after the grace.
    monkeypatch.setattr(jobs, "_CANCEL_GRACE_S", 0.0)
    config = TINY.replace(path_steps=3000)  # paths take a few seconds
    job_id = manager.submit_run(config)
    running = wait_until(lambda: (s := manager.status(job_id)).stage == "paths" and s, 60)
    manager.cancel(job_id)
    status = manager.wait(job_id, timeout=10)
    assert status.state == "cancelled" and status.error is None
    assert not alive(running.pid)
    assert store.has_stage(job_id, "minima") and not store.has_stage(job_id, "paths")
    trained = store.load_stage(job_id, "minima")[0]["seconds"]
    # Submitted again: a new worker resumes from the stored minima.
    status = manager.wait(manager.submit_run(config), timeout=60)
    assert status.state == "done" and status.pid != running.pid
    assert load_result(store, job_id).timings["minima"] == trained


def test_a_killed_worker_fails_its_job_and_the_next_job_runs(manager, store):
    job_id = manager.submit_run(TINY.replace(path_steps=100_000))
    running = wait_until(lambda: (s := manager.status(job_id)).stage == "paths" and s, 60)
    os.kill(running.pid, signal.SIGKILL)
    status = manager.wait(job_id, timeout=30)
    assert status.state == "failed" and "\n" not in status.error
    assert status.error.startswith(f"the worker process (pid {running.pid}) killed by signal "
                                   "SIGKILL while computing this job")
    assert "finished stages are kept" in status.error and store.has_stage(job_id, "minima")
    after = manager.wait(manager.submit_run(TINY), timeout=60)
    assert after.state == "done" and after.pid not in (None, running.pid)


def test_a_worker_with_another_package_is_refused(manager):
    job = jobs._Job("x", "run", [TINY], 0)
    problem = manager._relay(job, ("ready", 123, "/elsewhere/lossbarcode/__init__.py"))
    assert "imported lossbarcode from /elsewhere/lossbarcode" in problem
    assert manager._relay(job, ("ready", 123, jobs._PACKAGE)) is None


@pytest.mark.parametrize(("cores", "threads"), [(1, 1), (2, 1), (3, 2), (16, 15), (0, 1)])
def test_worker_threads_leave_one_core_to_the_server(cores, threads):
    assert devices.worker_threads(cores) == threads


def test_a_background_worker_lowers_its_priority_and_sets_its_threads():
    # In a child process: renicing is irreversible.
    code = ("import os, torch\n"
            "from lossbarcode import devices\n"
            "before = os.getpriority(os.PRIO_PROCESS, 0)\n"
            "n = devices.become_background_worker()\n"
            "print(n, torch.get_num_threads(), devices.usable_cores(),\n"
            "      os.getpriority(os.PRIO_PROCESS, 0) - before)\n")
    package_root = str(Path(devices.__file__).parents[1])  # the package under test
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": package_root})
    n, torch_threads, cores, niced = map(int, out.stdout.split())
    assert n == torch_threads == devices.worker_threads(cores)
    assert cores == len(os.sched_getaffinity(0))
    assert niced == min(devices.WORKER_NICE, 19 - os.getpriority(os.PRIO_PROCESS, 0))


def test_sweep_of_two_widths(manager, store):
    job_id = manager.submit_sweep(TINY, widths=[4, 8])
    assert job_id.startswith("sweep-") and len(job_id) == len("sweep-") + 16
    assert manager.submit_sweep(TINY, widths=[4, 8]) == job_id
    status = manager.wait(job_id, timeout=60)
    assert status.state == "done" and status.kind == "sweep" and status.stage == "run 2/2"
    assert len(status.run_ids) == 2 and status.fraction == 1.0
    assert [load_result(store, r).config.width for r in status.run_ids] == [4, 8]
    # Already computed: done at once.
    assert manager.status(manager.submit_sweep(TINY, widths=[4, 8])).state == "done"


def test_unknown_job_and_shutdown(store):
    manager = JobManager(store)
    assert manager.status("nope") is None
    with pytest.raises(KeyError):
        manager.wait("nope")
    manager.cancel("nope")  # no error
    manager.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        manager.submit_run(TINY)
    with pytest.raises(ValueError, match="workers"):
        JobManager(store, workers=0)


def test_run_clock_eta_converges_to_the_truth_with_a_fake_clock():
    # The model (weights) is 10x too optimistic; the true stage times are 10 s and 30 s.
    true = {"minima": 10.0, "paths": 30.0}
    clock = jobs._RunClock({"minima": 1.0, "paths": 3.0}, mst=False, now=0.0)
    assert clock.fraction() == 0.0 and clock.eta(0.0) == pytest.approx(4.0)  # the model
    errors = []
    now = 0.0
    for stage in ("minima", "paths"):
        start = now
        clock.update(stage, 0, 100, "starting", now)  # every stage reports when it starts
        for step in range(1, 101):
            now = start + true[stage] * step / 100
            clock.update(stage, step, 100, "mean minibatch loss 1", now)
            errors.append(abs(clock.eta(now) - (sum(true.values()) - now)))
        clock.update(stage, 1, 1, "done", now)
    assert errors[-1] == pytest.approx(0.0, abs=1e-9)
    # After a tenth of the first stage the ETA is within 2x of the truth, and the error keeps
    # shrinking: the paths stage is predicted from the minima stage's observed pace.
    left = [sum(true.values()) - true["minima"] * s / 100 for s in range(1, 101)]
    assert errors[9] < left[9] / 2
    assert max(errors[100:]) < 0.1 * errors[0]
    assert all(b <= a + 1e-9 for a, b in zip(errors[10:100], errors[11:100], strict=False))
    clock.update("result", 1, 1, "TO-score 0.1", now=now)
    assert clock.fraction() == 1.0 and clock.eta(now) == 0.0


def test_run_clock_fraction_markers_and_loaded_stages():
    clock = jobs._RunClock({"minima": 1.0, "paths": 3.0}, mst=False, now=0.0)
    clock.update("minima", 1, 1, "done", now=5.0)  # loaded from the store: says nothing
    assert clock.observed == 0.0 and clock.eta(5.0) == pytest.approx(3.0)
    clock.update("paths", 0, 1, "profile", now=5.0)
    assert clock.fraction() == pytest.approx(0.25)
    clock.update("paths", 10, 100, "all", now=15.0)
    clock.update("paths", 0, 1, "profile", now=16.0)  # markers never move progress back
    assert clock.fraction() == pytest.approx(0.25 + 0.75 * 0.1)
    # 11 s for a tenth: the pace says 110 s in all, the model 3 s (so at least the 11 s
    # spent); the pace is trusted 2:1 at p = 0.1.
    assert clock.eta(16.0) == pytest.approx(0.9 * (2 / 3 * 110 + 1 / 3 * 11))
    # Overdue without progress: as long again as spent so far.
    late = jobs._RunClock({"minima": 1.0, "paths": 1.0}, mst=False, now=0.0)
    late.update("minima", 0, 100, "mean minibatch loss 1", now=4.0)
    assert late.eta(4.0) == pytest.approx(4.0 + 1.0)
