"""Experiments end to end: config, stages, resume, corruption, concurrency, sweeps, CLI."""

import csv
import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from lossbarcode import choices, experiment, minima
from lossbarcode import sweep as sweep_module
from lossbarcode.cli import main
from lossbarcode.experiment import ExperimentConfig, Result, load_result, run_experiment
from lossbarcode.store import ResultStore
from lossbarcode.sweep import summarize, sweep, sweep_records

ROOT = Path(__file__).resolve().parents[1]
TINY = ExperimentConfig(n_train=200, n_test=100, width=8, depth=1, k=3, steps=30,
                        batch_size=32, images=2, path_steps=10, eval_points=2, device="cpu")


@pytest.fixture
def store(tmp_path):
    return ResultStore(tmp_path / "results")


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory):
    store = ResultStore(tmp_path_factory.mktemp("shared") / "results")
    return store, run_experiment(TINY, store)


def child(code: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# --------------------------------------------------------------------------- config

def test_invalid_configs_list_every_problem():
    with pytest.raises(ValueError) as err:
        ExperimentConfig(width=0, k=1, dataset="imagenet", path_method="teleport")
    message = str(err.value)
    for part in ("width must be", "k must be", "dataset must be one of", "path_method"):
        assert part in message
    with pytest.raises(ValueError, match="transformer"):
        ExperimentConfig(arch="transformer", dataset="digits")
    with pytest.raises(ValueError, match="divisible"):
        ExperimentConfig(arch="transformer", dataset="modadd", width=10, heads=4)
    with pytest.raises(ValueError, match="image data"):
        ExperimentConfig(arch="cnn", dataset="spirals")
    with pytest.raises(ValueError, match="lr must be"):
        ExperimentConfig(lr=-1.0)
    with pytest.raises(ValueError, match="unknown config keys"):
        ExperimentConfig.from_dict({"widht": 3})


def test_the_config_is_torch_free():
    """The command line, the dashboard and the cost model read configs without the engine."""
    code = ("import sys; from lossbarcode.config import ExperimentConfig; "
            "ExperimentConfig().run_id; assert 'torch' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr[-500:]


def test_a_config_that_exists_is_valid():
    """Validation happens at construction, so no path builds an invalid config: not a
    replace, not dataclasses.replace, not from_dict."""
    good = ExperimentConfig(width=4)
    for build in (lambda: good.replace(k=1), lambda: dataclasses.replace(good, k=1),
                  lambda: ExperimentConfig.from_dict({**good.to_dict(), "k": 1})):
        with pytest.raises(ValueError, match="k must be"):
            build()
    assert good.validate() is good  # the compatibility method checks nothing new


def test_run_id_is_stable_across_processes_and_sensitive_to_every_knob():
    here = TINY.run_id
    proc = child("""
        from lossbarcode.experiment import ExperimentConfig
        import json, sys
        print(ExperimentConfig.from_dict(json.loads(sys.argv[1])).run_id)
    """, json.dumps(dict(reversed(list(TINY.to_dict().items())))))
    out, _ = proc.communicate(timeout=60)
    assert out.strip() == here
    assert len({TINY.replace(seed=1).run_id, TINY.replace(width=9).run_id,
                TINY.replace(path_method="linear").run_id, here}) == 4


# --------------------------------------------------------------------------- one run

def test_result_is_complete_and_consistent(tiny_result):
    store, result = tiny_result
    data = result.to_dict()
    for key in ("run_id", "config", "minima", "pairs", "barriers", "barcode", "to_score",
                "timings"):
        assert key in data
    assert set(data["minima"][0]) >= {"train_loss", "test_loss", "test_error"}
    text = json.dumps(data, allow_nan=False)  # strictly JSON-safe
    again = Result.from_dict(json.loads(text))
    assert again.barcode == result.barcode and again.scores == result.scores
    valid = np.flatnonzero(~result.diverged)
    born = np.flatnonzero(result.minima_certified)
    assert sorted(result.barcode.minima.tolist()) == born.tolist()
    assert sorted(result.barcode_all.minima.tolist()) == valid.tolist()
    for row, stored in zip(result.minima_table(), data["minima"], strict=True):
        assert stored["certified"] == row["certified"]
        assert {"grad_norm", "hessian_min_eig", "stuck", "why_not"} <= set(stored)
    assert len(result.barcode.essential()) == 1  # all pairs connected
    # every barrier is at least as high as both ends; the barcode uses the training loss
    for (i, j) in result.pairs:
        assert result.barrier_matrix[i, j] >= max(result.train_loss[i],
                                                  result.train_loss[j]) - 1e-7
    np.testing.assert_allclose(result.barcode.births, result.train_loss[result.barcode.minima])
    assert result.score == result.scores["l2"]
    assert set(result.scores) == set(experiment.SCORE_VARIANTS)
    assert set(result.timings) == {"minima", "paths", "barcode"}
    assert store.stages(result.run_id) == ["minima", "paths", "result"]
    # The old names still work: aliases of the new ones.
    assert result.barriers is result.barrier_matrix and result.to_score is result.scores
    assert Result.from_json(result.to_json()).scores == result.scores
    for m, (i, j) in enumerate(result.pairs):
        assert result.barrier_matrix[i, j] == result.path_barriers[m]


def test_an_uncertified_minimum_has_no_bar_and_no_part_in_the_headline_score(tiny_result):
    store, result = tiny_result
    found = experiment.load_minima(store, result.run_id)
    connected = experiment.load_paths(store, result.run_id)
    assert found.certified.all()  # the premise: TINY trains to certified minima
    # The lowest minimum fails the gradient tolerance: it is a point of the landscape (a
    # lower point the others can die into), not a birth.
    lowest = int(np.argmin(found.train_loss))
    certified = found.certified.copy()
    certified[lowest] = False
    grad = found.grad_norm.copy()
    grad[lowest] = 10 * found.tol
    worse = dataclasses.replace(found, certified=certified, grad_norm=grad)
    r = experiment.assemble_result(result.config, worse, connected, dict(result.timings),
                                   result.device)
    assert lowest not in r.barcode.minima and lowest in r.barcode_all.minima
    assert np.isfinite(r.barcode.deaths).all()  # no bar is essential: a lower point exists
    assert r.minima_count == (found.k - 1, found.k)
    assert r.scores != r.scores_all or len(r.barcode_all) == 1
    row = r.minima_table()[lowest]
    assert not row["certified"] and "gradient" in row["why_not"]
    # Its segment (none) is left out of the generalization statistics too.
    assert r.generalization["n"] <= found.k - 1
    assert "certified" in r.certification_note()


def test_old_asymptotic_p_values_are_recomputed_on_load(tiny_result):
    _, result = tiny_result
    data = json.loads(json.dumps(result.to_dict()))
    assert data["generalization"]["method"] in ("exact", "monte carlo", "undefined")
    data["generalization"] = {"spearman": -1.0, "p_value": 0.0, "n": 3}  # spearmanr's, stored
    loaded = Result.from_dict(data).generalization
    assert loaded == experiment.generalization_summary(result.segment_lengths(),
                                                       result.test_error,
                                                       result.config.path_atol)
    assert loaded["p_value"] != 0.0 and "method" in loaded


def with_bar_lengths(result: Result, length: float) -> Result:
    """``result`` with every finite bar ``length`` long."""
    bc = result.barcode
    deaths = np.where(np.isfinite(bc.deaths), bc.births + length, bc.deaths)
    return dataclasses.replace(result, barcode=dataclasses.replace(bc, deaths=deaths))


def test_bars_within_the_resolution_are_not_read_as_a_property_of_the_network(tiny_result):
    _, result = tiny_result
    atol = result.config.path_atol
    short, long = with_bar_lengths(result, atol / 2), with_bar_lengths(result, 10 * atol)
    finite = int(np.isfinite(result.barcode.deaths).sum())
    assert finite >= 2  # the premise: bars to resolve
    assert short.resolved == (0, finite) and long.resolved == (finite, finite)
    assert "not resolved from 0" in short.resolution_note()
    assert "not resolved" not in long.resolution_note()
    assert short.score > 0  # the value is still shown, with the note beside it
    # A rank test sees them tied at 0: no correlation can be read from their order.
    lengths = short.resolved_lengths()
    assert np.all(lengths[np.isfinite(lengths)] == 0)
    summary = experiment.generalization_summary(short.segment_lengths(), short.test_error, atol)
    assert summary["spearman"] is None and summary["resolution"] == atol
    # A stored summary made before the rule is recomputed where the rule changes it only.
    old = {"spearman": 0.5, "p_value": 0.04, "n": finite, "method": "exact",
           "n_permutations": 24}
    for r, recomputed in ((short, True), (long, False)):
        loaded = experiment._stored_generalization(old, r.barcode, r.k, r.config, r.test_error)
        assert (loaded != old) == recomputed
    assert experiment._stored_generalization({**old, "resolution": atol}, short.barcode,
                                             short.k, short.config, short.test_error)["n"] == finite


def test_finished_run_is_loaded_not_recomputed(tiny_result, monkeypatch):
    store, result = tiny_result

    def forbidden(*args, **kwargs):
        raise AssertionError("recomputed a finished stage")

    monkeypatch.setattr(minima, "find_minima", forbidden)
    again = run_experiment(TINY, store)
    assert again.barcode == result.barcode


def test_corrupt_result_is_reported_and_rebuilt_from_finished_stages(tiny_result, monkeypatch):
    store, result = tiny_result
    path = store.root / result.run_id / "result.json"
    path.write_text(path.read_text()[:100])  # truncated
    monkeypatch.setattr(minima, "find_minima", lambda *a, **k: pytest.fail("minima redone"))
    with pytest.warns(RuntimeWarning, match="recomput"):
        again = run_experiment(TINY, store)
    assert again.barcode == result.barcode


def test_corrupt_minima_are_recomputed_identically(store):
    first = run_experiment(TINY, store)
    npz = store.root / first.run_id / "minima.npz"
    npz.write_bytes(npz.read_bytes()[:-50])
    store.drop_stage(first.run_id, "result")
    store.drop_stage(first.run_id, "paths")
    with pytest.warns(RuntimeWarning):
        again = run_experiment(TINY, store)
    assert again.barcode == first.barcode  # same seed, same CPU -> same barcode


def test_recomputed_stages_drop_what_was_made_from_the_old_ones(store):
    from lossbarcode.maps import minima_map
    from lossbarcode.slices import result_slice

    first = run_experiment(TINY, store)
    run_id = first.run_id
    minima_map(store, run_id, method="pca")
    result_slice(store, run_id, (0, 1, 2), resolution=5)
    derived = {s for s in store.stages(run_id) if s.startswith(("map-", "slice-"))}
    assert len(derived) == 2
    # A lost paths stage: its map goes with it; the slice (made from the minima) stays.
    store.drop_stage(run_id, "paths")
    store.drop_stage(run_id, "result")
    run_experiment(TINY, store)
    assert {s for s in store.stages(run_id) if s.startswith("map-")} == set()
    assert {s for s in store.stages(run_id) if s.startswith("slice-")} == {
        s for s in derived if s.startswith("slice-")}
    # Corrupt minima: the paths, maps and slices made from them are all recomputed or gone.
    minima_map(store, run_id, method="pca")
    paths_json = store.root / run_id / "paths.json"
    before = paths_json.stat().st_mtime_ns
    npz = store.root / run_id / "minima.npz"
    npz.write_bytes(npz.read_bytes()[:-50])
    store.drop_stage(run_id, "result")
    with pytest.warns(RuntimeWarning):
        run_experiment(TINY, store)
    assert not [s for s in store.stages(run_id) if s.startswith(("map-", "slice-"))]
    assert paths_json.stat().st_mtime_ns != before  # the paths were recomputed too


RUN_IN_CHILD = """
    import sys, time
    from lossbarcode.experiment import ExperimentConfig, run_experiment
    from lossbarcode.store import ResultStore
    import json
    config = ExperimentConfig.from_dict(json.loads(sys.argv[1]))
    computed = []
    def progress(stage, done, total, message):
        if stage != "result" and done < total:
            computed.append(stage)
        if stage == "paths" and sys.argv[3] == "stall":
            time.sleep(600)  # killed here, after the minima stage was saved
    result = run_experiment(config, ResultStore(sys.argv[2]), progress=progress)
    print("computed" if computed else "loaded", result.run_id)
"""


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_finished_stage(store, tmp_path, monkeypatch):
    config = TINY.replace(path_method="neb")
    proc = child(RUN_IN_CHILD, json.dumps(config.to_dict()), str(store.root), "stall")
    deadline = time.time() + 120
    while not store.has_stage(config.run_id, "minima") and time.time() < deadline:
        time.sleep(0.2)
    assert store.has_stage(config.run_id, "minima"), proc.stderr.read()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert store.stages(config.run_id) == ["minima"]

    fresh = run_experiment(config, ResultStore(tmp_path / "fresh"))
    monkeypatch.setattr(minima, "find_minima", lambda *a, **k: pytest.fail("minima redone"))
    resumed = run_experiment(config, store)
    assert resumed.barcode == fresh.barcode
    np.testing.assert_array_equal(resumed.barrier_matrix, fresh.barrier_matrix)


@pytest.mark.slow
def test_two_processes_asking_for_the_same_run_compute_it_once(store):
    payload = json.dumps(TINY.replace(seed=5).to_dict())
    procs = [child(RUN_IN_CHILD, payload, str(store.root), "go") for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outputs]
    words = sorted(o[0].split()[0] for o in outputs)
    assert words == ["computed", "loaded"]
    assert len({o[0].split()[1] for o in outputs}) == 1


def test_cancelling_keeps_finished_stages(store):
    def cancel_in_paths(stage, done, total, message):
        if stage == "paths":
            raise experiment.Cancelled()

    with pytest.raises(experiment.Cancelled):
        run_experiment(TINY.replace(seed=7), store, progress=cancel_in_paths)
    assert store.stages(TINY.replace(seed=7).run_id) == ["minima"]
    assert load_result(store, TINY.replace(seed=7).run_id) is None


# --------------------------------------------------------------------------- sweeps

def check_sweep(results, widths, seeds):
    assert [(r.config.width, r.config.seed) for r in results] == [
        (w, s) for w in widths for s in seeds]
    rows = summarize(sweep_records(results), include_broken=True)  # tiny runs: not trained
    assert [row["width"] for row in rows] == list(widths)
    for row in rows:
        assert row["runs"] == len(seeds) and len(row["to_score_seeds"]) == len(seeds)
        assert row["to_score_mean"] == pytest.approx(np.mean(row["to_score_seeds"]))
    return rows


def test_local_sweep_runs_the_grid_and_skips_finished_runs(store, monkeypatch):
    results = sweep(TINY, widths=[4, 8], seeds=[0, 1], store=store)
    check_sweep(results, [4, 8], [0, 1])
    monkeypatch.setattr(minima, "find_minima", lambda *a, **k: pytest.fail("rerun"))
    again = sweep(TINY, widths=[4, 8], seeds=[0, 1], store=store)
    assert [r.barcode for r in again] == [r.barcode for r in results]
    with pytest.raises(ValueError, match="executor"):
        sweep(TINY, executor="slurm", store=store)
    with pytest.raises(ValueError, match="repeat"):
        sweep(TINY, widths=[4, 4], store=store)


@pytest.mark.slow
def test_ray_sweep_on_a_real_local_instance(store):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    try:
        results = sweep(TINY, widths=[4, 8], seeds=[0, 1], executor="ray", store=store)
    finally:
        ray.shutdown()
    check_sweep(results, [4, 8], [0, 1])
    # The workers compute with one thread (pinned above); the same arithmetic here gives the
    # same runs (other thread counts sum in another order: a narrow net can end elsewhere).
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = sweep(TINY, widths=[4, 8], seeds=[0, 1], store=ResultStore(store.root / "local"))
    finally:
        torch.set_num_threads(threads)
    assert [r.barcode for r in results] == [r.barcode for r in local]


@pytest.mark.slow
def test_submitit_sweep_in_local_mode_shares_the_results_folder(store):
    pytest.importorskip("submitit")
    shared = ResultStore(store.root / "submitit")
    results = sweep(TINY, widths=[4, 8], seeds=[0], executor="submitit", store=shared,
                    submitit_cluster="local", submitit_parameters={"timeout_min": 10})
    check_sweep(results, [4, 8], [0])
    local = sweep(TINY, widths=[4, 8], seeds=[0], store=ResultStore(store.root / "local2"))
    assert [r.barcode for r in results] == [r.barcode for r in local]
    assert sorted(shared.list()) == sorted(r.run_id for r in results)  # logs are not runs
    assert list((shared.root / ".submitit").glob("*/*_log.err"))


# --------------------------------------------------------------------------- CLI

def tiny_flags(results):
    return ["--results", str(results), "--n-train", "200", "--n-test", "100", "--width", "8",
            "--depth", "1", "--minima", "3", "--steps", "30", "--batch-size", "32",
            "--images", "2", "--path-steps", "10", "--eval-points", "2", "--device", "cpu"]


def test_cli_run_show_export_list(tmp_path, capsys):
    results = tmp_path / "r"
    assert main(["run", "-q", *tiny_flags(results)]) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    assert run_id == TINY.run_id
    assert main(["show", run_id, "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "TO-score (l2, bars at certified minima)" in out and "merged_into" in out
    assert main(["show", run_id, "--json", "--results", str(results)]) == 0
    assert json.loads(capsys.readouterr().out)["run_id"] == run_id
    assert main(["export", run_id, "--format", "csv", "--results", str(results)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("minimum,train_loss") and len(lines) == 1 + TINY.k
    out_file = tmp_path / "r.json"
    assert main(["export", run_id, "--output", str(out_file), "--results", str(results)]) == 0
    barcode = json.loads(out_file.read_text())["barcode"]
    # One meaning of "merged into" in both exports: the absorbing bar's minimum.
    from_json = dict(zip(barcode["minima"], barcode["merged_into_minimum"], strict=True))
    from_csv = {int(row["minimum"]): int(row["merged_into_minimum"] or -1)
                for row in csv.DictReader(io.StringIO("\n".join(lines)))
                if row["diverged"] == "False"}
    assert from_json == from_csv and sorted(from_json.values()).count(-1) == 1
    assert [barcode["minima"][m] if m >= 0 else -1 for m in barcode["merged_into"]] == \
        barcode["merged_into_minimum"]
    assert main(["list", "--results", str(results)]) == 0
    assert run_id in capsys.readouterr().out


def test_cli_config_file_and_bad_input(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text('width = 0\npath_method = "neb"\n')
    assert main(["run", "--config", str(config), "--results", str(tmp_path)]) == 2
    assert "width must be" in capsys.readouterr().err
    assert main(["show", "0123456789abcdef", "--results", str(tmp_path)]) == 2
    assert "no finished run" in capsys.readouterr().err
    assert main(["run", "--config", str(tmp_path / "missing.json")]) == 2
    assert main(["sweep", "--widths", "4,x", "--results", str(tmp_path)]) == 2
    assert "comma list" in capsys.readouterr().err


def test_cli_sweep_writes_and_appends_a_sweep_file(tmp_path, capsys):
    out = tmp_path / "sweep.json"
    flags = tiny_flags(tmp_path / "r")
    assert main(["sweep", "-q", *flags, "--widths", "4,8", "--output", str(out)]) == 0
    assert main(["sweep", "-q", *flags, "--widths", "8", "--depths", "2", "--output", str(out),
                 "--append"]) == 0
    table = capsys.readouterr().out
    assert "to_score_mean" in table
    document = json.loads(out.read_text())
    scales = sorted((r["width"], r["depth"]) for r in document["records"])
    assert scales == [(4, 1), (8, 1), (8, 2)]
    # Broken (untrained tiny) runs are left out of the summary, and the table says so.
    summarized = {(row["width"], row["depth"]) for row in document["summary"]}
    assert all((r["width"], r["depth"]) in summarized or r["broken"]
               for r in document["records"])
    assert ("broken runs left out" in table) == any(r["broken"] for r in document["records"])
    assert len(document["command"]) == 2
    assert set(document["barcodes"]) == {r["run_id"] for r in document["records"]}


def test_cross_design_varies_one_scale_at_a_time():
    from lossbarcode.sweep import sweep_configs

    base = TINY.replace(width=32, depth=2)
    configs = sweep_configs(base, widths=[4, 32, 64], depths=[1, 2, 3], seeds=[0, 1],
                            design="cross")
    scales = [(c.width, c.depth) for c in configs[::2]]
    assert scales == [(4, 2), (32, 2), (64, 2), (32, 1), (32, 3)]
    assert [c.seed for c in configs[:2]] == [0, 1]
    assert len(sweep_configs(base, widths=[4, 32, 64], depths=[1, 2, 3])) == 9
    with pytest.raises(ValueError, match="design"):
        sweep_configs(base, design="star")


def test_the_shipped_demo_sweep_is_reproducible_by_its_command():
    document = json.loads((ROOT / "assets" / "demo_sweep.json").read_text())
    from lossbarcode.cli import parse_sweep_command
    from lossbarcode.sweep import sweep_configs

    (command,) = document["command"]
    base, axes = parse_sweep_command(command)
    configs = sweep_configs(base, **axes)
    assert sorted(c.run_id for c in configs) == sorted(r["run_id"] for r in document["records"])
    assert set(document["barcodes"]) == {r["run_id"] for r in document["records"]}
    # Made by the current path algorithm, with certificates: every record says how many of its
    # minima and bars are certified and its health, and the curves hold only runs fit for
    # them (not broken, 90% of the minima certified), saying how many were left out. No trend
    # is asserted: the data is shipped as it comes out.
    assert all(r["paths_version"] == choices.PATHS_VERSION for r in document["records"])
    assert all({"minima_certified", "health", "broken", "bars_certified"} <= set(r)
               for r in document["records"])
    ready = [r for r in document["records"] if sweep_module.curve_ready(r)]
    assert sum(row["runs"] for row in document["summary"]) == len(ready)
    assert sum(row["runs_left_out"] for row in document["summary"]) <= len(document["records"])
    assert all(row["to_score_floor"] > 0 for row in document["summary"])


# --------------------------------------------------------------------------- converged paths


def test_converged_run_stores_and_shows_path_diagnostics(store, capsys):
    config = TINY.replace(path_steps=None, path_max_steps=150)
    result = run_experiment(config, store)
    assert result.paths_version == choices.PATHS_VERSION
    m = len(result.pairs)
    assert result.path_converged.shape == (m,) and result.path_steps_used.shape == (m,)
    assert not np.any(result.path_converged & result.path_stalled)
    assert all(len(h) == len(s) >= 2 for h, s in zip(result.path_history,
                                                       result.path_history_steps, strict=True))
    assert np.all(result.path_steps_used <= 150 + choices.PATH_FINAL_STEPS)
    assert np.isfinite(result.grad_norm).all() and (result.grad_norm > 0).all()
    assert np.isfinite(result.path_top_grad_norm).all()
    done, bars = result.certified
    assert bars == int(np.isfinite(result.barcode.deaths).sum()) and 0 <= done <= bars
    # A bar is certified exactly when its birth and its death are (the run is not broken).
    deaths = result.deaths()
    for n, (i, j) in enumerate(result.barcode.saddle_edges.tolist()):
        if np.isfinite(result.barcode.deaths[n]):
            death = deaths[(min(i, j), max(i, j))]
            birth = result.minima_certified[result.barcode.minima[n]]
            assert result.bar_certified()[n] == (death.certified and birth)
            lowest = min(b for b, p in zip(result.path_barriers, result.pairs.tolist(),
                                           strict=True) if sorted(p) == sorted((i, j)))
            assert death.barrier == lowest == result.barcode.deaths[n]
    data = json.loads(json.dumps(result.to_dict()))
    assert data["paths_version"] == choices.PATHS_VERSION and len(data["paths"]) == m
    assert {"converged", "stalled", "steps", "barrier_history", "history_steps",
            "perp_grad_norm", "top_grad_norm", "role", "start"} <= set(data["paths"][0])
    back = load_result(store, result.run_id)
    np.testing.assert_array_equal(back.path_converged, result.path_converged)
    np.testing.assert_array_equal(back.path_history_steps[0], result.path_history_steps[0])
    np.testing.assert_array_equal(back.bar_certified(), result.bar_certified())
    assert main(["show", result.run_id, "--results", str(store.root)]) == 0
    out = capsys.readouterr().out
    assert f"{int(result.path_converged.sum())}/{m} converged" in out
    assert "perp_grad" in out and "top_grad" in out and "bars certified" in out
    assert "minima certified" in out and "health:" in out and "why_not" in out


def test_a_capped_stalled_or_disagreeing_death_leaves_its_bar_uncertified(store):
    result = run_experiment(TINY.replace(path_steps=None, path_max_steps=150), store)
    certified, _ = result.bar_certificates()
    finite = np.flatnonzero(np.isfinite(result.barcode.deaths) & certified)
    assert finite.size  # the premise: a certified finite bar to break
    n = int(finite[0])
    i, j = sorted(int(v) for v in result.barcode.saddle_edges[n])
    rows = np.flatnonzero((np.sort(result.pairs, axis=1) == [i, j]).all(axis=1))
    for change, why in (({"path_converged": False}, "capped"),
                        ({"path_converged": False, "path_stalled": True}, "stalled")):
        edited = {name: getattr(result, name).copy() for name in change}
        for name, value in change.items():
            edited[name][rows] = value
        ok, reasons = dataclasses.replace(result, **edited).bar_certificates()
        assert not ok[n] and why in reasons[n]
    # A second start of the same pair that ended far higher: the starts disagree.
    worse = dataclasses.replace(
        result, pairs=np.vstack([result.pairs, [[i, j]]]),
        path_barriers=np.append(result.path_barriers, result.path_barriers[rows[0]] + 1.0),
        linear_barriers=np.append(result.linear_barriers, result.linear_barriers[rows[0]]),
        path_converged=np.append(result.path_converged, True),
        path_stalled=np.append(result.path_stalled, False),
        path_top_grad_norm=np.append(result.path_top_grad_norm, 0.0),
        profiles=(*result.profiles, result.profiles[rows[0]]))
    ok, reasons = worse.bar_certificates()
    assert not ok[n] and "restarts disagree by 1" in reasons[n]
    assert worse.bar_spread()[n] == pytest.approx(1.0)
    # The same start capped on its way down is no evidence of another saddle: the spread
    # shows it, the certificate does not count it.
    unfinished = dataclasses.replace(
        worse, path_converged=np.append(result.path_converged, False))
    ok, reasons = unfinished.bar_certificates()
    assert ok[n] and not reasons[n] and unfinished.bar_spread()[n] == pytest.approx(1.0)


def test_fixed_budget_paths_are_never_certified(tiny_result):
    _, result = tiny_result
    assert result.config.path_steps == 10 and not result.path_converged.any()
    assert result.certified[0] == 0
    assert "fixed-budget" in result.paths_note()


def test_the_path_algorithm_version_is_part_of_the_run_id(monkeypatch):
    from lossbarcode import choices

    before = ExperimentConfig().run_id
    assert ExperimentConfig().identity()["paths_version"] == choices.PATHS_VERSION
    monkeypatch.setattr(choices, "PATHS_VERSION", choices.PATHS_VERSION + 1)
    assert ExperimentConfig().run_id != before  # cached_property: a fresh config


@pytest.mark.parametrize(("changes", "flag"), [
    ({"path_tol": 0}, "path_tol"), ({"path_tol": float("nan")}, "path_tol"),
    ({"path_atol": -1e-4}, "path_atol"), ({"path_max_steps": 0}, "path_max_steps"),
    ({"path_steps": 0}, "path_steps"), ({"polish_steps": -1}, "polish_steps"),
    ({"polish_steps": 0}, "polish_steps"),
    # Tolerances so large that they would certify anything, and bad restarts.
    ({"path_atol": 1e300}, "path_atol"), ({"path_tol": 2.0}, "path_tol"),
    ({"minima_tol": 0}, "minima_tol"), ({"minima_tol": float("nan")}, "minima_tol"),
    ({"minima_tol": float("inf")}, "minima_tol"), ({"minima_tol": 2.0}, "minima_tol"),
    ({"restarts": 0}, "restarts"), ({"restarts": 11}, "restarts"),
])
def test_bad_stopping_rule_in_the_config(changes, flag, tmp_path, capsys):
    with pytest.raises(ValueError, match=flag):
        TINY.replace(**changes)
    cli_flag = "--" + flag.replace("_", "-")
    value = str(next(iter(changes.values())))
    assert main(["run", cli_flag, value, "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and cli_flag in err[0] and "Traceback" not in err[0]


@pytest.mark.parametrize("flags", [["--path-lr", "0.1"], ["--path-steps", "10"]])
def test_the_string_method_refuses_settings_it_does_not_use(flags, tmp_path, capsys):
    assert main(["run", "--path-method", "string", *flags, "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flags[0] in err[0] and "string" in err[0]


def test_old_fixed_budget_results_still_load_and_show_labelled(tmp_path, capsys):
    import shutil

    from lossbarcode.experiment import read_result
    from lossbarcode.store import CorruptResultError

    # Made by lossbarcode before paths converged (c06c849): no checksums, no diagnostics.
    old = tmp_path / "results"
    shutil.copytree(ROOT / "tests" / "data" / "v1_results", old)
    run_id = "db030e61f1c9f060"
    result = read_result(ResultStore(old), run_id)
    assert result.paths_version == 1 and not result.path_converged.any()
    assert result.certified[0] == 0 and np.isnan(result.grad_norm).all()
    assert main(["show", run_id, "--results", str(old)]) == 0
    assert "old fixed-budget method" in capsys.readouterr().out
    assert main(["list", "--results", str(old)]) == 0
    out = capsys.readouterr().out
    assert "0/3 minima, 0/2 bars" in out and "paths of a fixed step budget" in out
    # Without a checksum, the config must still hash to the run id, and it may not claim the
    # new path algorithm.
    path = old / run_id / "result.json"
    record = json.loads(path.read_text())
    for edit in ({"width": 16}, None):
        bad = json.loads(json.dumps(record))
        if edit:
            bad["meta"]["config"].update(edit)
        else:
            bad["meta"]["paths_version"] = 2
        path.write_text(json.dumps(bad))
        with pytest.raises(CorruptResultError):
            read_result(ResultStore(old), run_id)


def test_text_tables_show_every_column_even_when_the_first_row_lacks_it():
    from lossbarcode.cli import _table

    lines = _table([{"run_id": "a", "status": "partial"},
                    {"run_id": "b", "status": "done", "width": 8}]).splitlines()
    assert lines[0].split() == ["run_id", "status", "width"]
    assert lines[1].split() == ["a", "partial", "-"] and lines[2].split() == ["b", "done", "8"]
