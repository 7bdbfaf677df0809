"""Background jobs: runs and sweeps in worker threads, dedupe, cancel, failures, cost model."""

import threading
import time

import pytest

from lossbarcode import jobs, minima
from lossbarcode.experiment import ExperimentConfig, load_result, run_experiment
from lossbarcode.jobs import JobManager, JobStatus, estimate_cost
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


def counting_find_minima(monkeypatch):
    calls = []
    real = minima.find_minima

    def wrapper(*args, **kwargs):
        calls.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(minima, "find_minima", wrapper)
    return calls


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


def test_same_run_twice_is_one_job_computed_once(store, monkeypatch):
    calls = counting_find_minima(monkeypatch)
    with JobManager(store, workers=2) as manager:
        first = manager.submit_run(TINY)
        second = manager.submit_run(TINY.replace())  # an equal config, another object
        assert first == second
        assert len(manager.jobs()) == 1
        assert manager.wait(first, timeout=60).state == "done"
    assert len(calls) == 1


def test_finished_run_is_done_at_once(manager, store, monkeypatch):
    run_experiment(TINY, store)
    calls = counting_find_minima(monkeypatch)
    status = manager.status(manager.submit_run(TINY))
    assert status.state == "done" and status.fraction == 1.0
    assert status.message == "loaded from the store"
    assert calls == []


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


def test_unexpected_exception_becomes_one_line(manager, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("first line\nsecond line")

    monkeypatch.setattr(minima, "find_minima", boom)
    status = manager.wait(manager.submit_run(TINY), timeout=30)
    assert status.state == "failed" and status.error == "RuntimeError: first line second line"


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


def test_estimate_cost_grows_with_width_and_k_and_is_fast():
    estimate_cost(TINY)  # measures the throughput once per process
    start = time.perf_counter()
    base = estimate_cost(TINY)
    wide = estimate_cost(TINY.replace(width=64))
    more = estimate_cost(TINY.replace(k=6))
    cnn = estimate_cost(TINY.replace(arch="cnn"))
    seq = estimate_cost(ExperimentConfig(arch="transformer", dataset="modadd", width=16))
    assert time.perf_counter() - start < 0.5 * 5
    assert set(base) == {"seconds", "n_params", "n_pairs", "flops"}
    assert base["n_params"] == 610 and base["n_pairs"] == 3  # (64+1)*8 + (8+1)*10
    assert wide["n_params"] > base["n_params"] and wide["flops"] > base["flops"]
    assert wide["seconds"] > base["seconds"] > 0
    assert more["n_pairs"] == 15 and more["flops"] > base["flops"]
    assert more["seconds"] > base["seconds"]
    assert cnn["flops"] > base["flops"]  # convolutions cost per pixel
    assert seq["n_params"] > 0 and seq["seconds"] > 0
    mst = estimate_cost(TINY.replace(k=8, pairs="mst"))
    assert mst["n_pairs"] == 14
    with pytest.raises(ValueError):
        estimate_cost(TINY.replace(k=1))


def test_huge_model_is_estimated_without_allocating_it():
    start = time.perf_counter()
    cost = estimate_cost(ExperimentConfig(width=20_000, depth=20, device="cpu"))
    assert time.perf_counter() - start < 2
    assert cost["n_params"] > 7 * 10**9 and cost["seconds"] > 3600


def test_run_clock_weights_and_eta():
    clock = jobs._RunClock({"minima": 1.0, "paths": 3.0}, mst=False, now=0.0)
    assert clock.fraction() == 0.0 and clock.eta(0.0) is None
    clock.update("minima", 50, 100, "mean minibatch loss 1", now=10.0)
    assert clock.fraction() == pytest.approx(0.125)
    # 10 s for half of weight 1: 20 s per unit; 0.5 + 3 units left.
    assert clock.eta(10.0) == pytest.approx(70.0)
    clock.update("minima", 1, 1, "done", now=20.0)
    clock.update("paths", 0, 1, "profile", now=20.0)
    assert clock.fraction() == pytest.approx(0.25)
    assert clock.eta(20.0) == pytest.approx(3 * 20.0)  # the minima stage's rate
    clock.update("paths", 10, 100, "all", now=30.0)
    clock.update("paths", 0, 1, "profile", now=31.0)  # markers never move progress back
    assert clock.fraction() == pytest.approx(0.25 + 0.75 * 0.1)
    assert clock.eta(31.0) == pytest.approx(11.0 / 0.1 * 0.9)
    clock.update("result", 1, 1, "TO-score 0.1", now=40.0)
    assert clock.fraction() == 1.0 and clock.eta(40.0) == 0.0
