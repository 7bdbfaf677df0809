"""The cost model: estimates, calibration on stored runs, memory refusal."""

import time

import pytest

from lossbarcode import choices, cost
from lossbarcode.cost import Calibration, estimate_cost, fit_calibration, store_calibration
from lossbarcode.experiment import ExperimentConfig, run_experiment
from lossbarcode.jobs import JobManager
from lossbarcode.jobs import estimate_cost as jobs_estimate_cost
from lossbarcode.store import ResultStore

TINY = ExperimentConfig(n_train=200, n_test=100, width=8, depth=1, k=3, steps=30,
                        batch_size=32, images=2, path_steps=10, eval_points=2, device="cpu")


def test_estimate_cost_grows_with_width_and_k_and_is_fast():
    assert jobs_estimate_cost is estimate_cost  # the old import still works
    estimate_cost(TINY)  # measures the throughput
    start = time.perf_counter()
    base = estimate_cost(TINY.replace(pairs="all"))
    wide = estimate_cost(TINY.replace(width=64))
    more = estimate_cost(TINY.replace(k=6, pairs="all"))
    cnn = estimate_cost(TINY.replace(arch="cnn"))
    seq = estimate_cost(ExperimentConfig(arch="transformer", dataset="modadd", width=16))
    signal = estimate_cost(TINY.replace(arch="cnn", dataset="mnist1d"))
    assert time.perf_counter() - start < 0.5 * 5
    assert base["n_params"] == 610 and base["n_pairs"] == 3  # (64+1)*8 + (8+1)*10
    assert base["seconds"] == pytest.approx(cost._SETUP_S + sum(base["stages"].values()))
    assert base["calibrated_runs"] == 0 and base["memory"] > 0
    assert wide["n_params"] > base["n_params"] and wide["flops"] > base["flops"]
    assert wide["seconds"] > base["seconds"] > 0 and wide["memory"] > base["memory"]
    assert more["n_pairs"] == 15 and more["flops"] > base["flops"]
    assert more["seconds"] > base["seconds"]
    assert cnn["flops"] > base["flops"]  # convolutions cost per pixel
    assert seq["n_params"] > 0 and seq["seconds"] > 0
    # 1-D convolutions over MNIST-1D: (1*3+1)*8 + GroupNorm 16 + head 8*10+10
    assert signal["n_params"] == 138 and 0 < signal["flops"] < cnn["flops"]
    mst = estimate_cost(TINY.replace(k=8, pairs="mst"))
    assert mst["n_pairs"] == 14
    with pytest.raises(ValueError):
        estimate_cost(TINY.replace(k=1))


def test_huge_model_is_estimated_without_allocating_it():
    start = time.perf_counter()
    huge = estimate_cost(ExperimentConfig(width=20_000, depth=20, device="cpu"))
    assert time.perf_counter() - start < 2
    assert huge["n_params"] > 7 * 10**9 and huge["seconds"] > 3600
    assert huge["memory"] > 8 * 4 * huge["n_params"]  # K = 8 copies at least


def test_stage_seconds_are_pure_and_scale_with_the_calibration():
    raw = cost.stage_seconds(TINY, 1e10)
    assert raw == cost.stage_seconds(TINY, 1e10)
    assert cost.stage_seconds(TINY, 2e10)["paths"] < raw["paths"]  # faster machine
    cal = Calibration((("minima", 2.0), ("paths", 0.5)), runs=3)
    scaled = cost.stage_seconds(TINY, 1e10, cal)
    assert scaled["minima"] == pytest.approx(2 * raw["minima"])
    assert scaled["paths"] == pytest.approx(0.5 * raw["paths"])


def test_fit_calibration_recovers_a_known_factor():
    configs = [TINY.replace(width=w, k=k) for w in (4, 8, 16) for k in (3, 5)]
    observations = []
    for i, config in enumerate(configs):
        predicted = cost.stage_seconds(config, 1e10)
        noise = 1.0 + 0.1 * (i % 3 - 1)  # +-10 %: the median still lands on the factor
        observations.append((predicted, {"minima": 3.0 * predicted["minima"] * noise,
                                         "paths": 0.25 * predicted["paths"] * noise,
                                         "barcode": 0.01}))
    cal = fit_calibration(observations)
    assert cal.runs == len(configs)
    assert cal.factor("minima") == pytest.approx(3.0)
    assert cal.factor("paths") == pytest.approx(0.25)
    assert fit_calibration([]) == cost.RAW and cost.RAW.factor("paths") == 1.0
    # A freak timing is clipped, and a stage without a usable timing keeps the model.
    wild = fit_calibration([({"minima": 1.0, "paths": 1.0}, {"minima": 1e9, "paths": 0.0})])
    assert wild.factor("minima") == cost._FACTOR_RANGE[1] and wild.factor("paths") == 1.0



def test_fit_calibration_is_robust_and_never_raises():
    """A minority of freak runs (1e9 times the model, or a thousandth) leaves the median of the
    honest ones; a huge integer, inf, NaN, a string or None is no timing; nothing raises."""
    honest = [({"minima": 2.0}, {"minima": 4.0})] * 5  # factor 2
    freaks = ([({"minima": 1.0}, {"minima": 1e9})] * 2 + [({"minima": 1.0}, {"minima": 1e-3})]
              * 2)
    assert fit_calibration(honest + freaks).factor("minima") == pytest.approx(2.0)
    junk = [({"minima": 1.0}, {"minima": bad}) for bad in (10**400, float("inf"),
                                                           float("nan"), "9", None, True)]
    junk.append(({"minima": 10**400}, {"minima": 1.0}))
    assert fit_calibration(honest + junk).factor("minima") == pytest.approx(2.0)
    assert fit_calibration(junk) == cost.RAW  # no usable timing at all: the raw model
    lo, hi = cost._FACTOR_RANGE
    tiny_p = fit_calibration([({"minima": 1e-300}, {"minima": 1e300})] * 3)  # ratio inf
    assert tiny_p.factor("minima") == hi
    assert fit_calibration([({"minima": 1e300}, {"minima": 1e-300})]).factor("minima") == lo


@pytest.mark.slow
def test_store_calibration_reads_the_finished_runs(tmp_path, monkeypatch):
    rate = 5e9  # fixed, so that the fit and the check below use the same throughput
    monkeypatch.setattr(cost, "throughput", lambda device, dtype: rate)
    store = ResultStore(tmp_path)
    assert store_calibration(store, "cpu") == cost.RAW
    results = [run_experiment(TINY.replace(seed=s), store) for s in (0, 1)]
    cal = store_calibration(store, "cpu")
    assert cal.runs == 2
    predicted = cost.stage_seconds(TINY, rate)
    lo, hi = cost._FACTOR_RANGE
    for stage in cost.COST_STAGES:  # the median of two runs: their mean ratio (clipped)
        ratios = [r.timings[stage] / predicted[stage] for r in results]
        assert cal.factor(stage) == pytest.approx(min(max(sum(ratios) / 2, lo), hi), rel=1e-6)
    assert store_calibration(store, "cuda") == cost.RAW  # other device kind: no runs
    calibrated = estimate_cost(TINY.replace(seed=2), cal)
    assert calibrated["calibrated_runs"] == 2
    assert calibrated["stages"]["minima"] == pytest.approx(cal.factor("minima")
                                                           * predicted["minima"], rel=1e-6)
    # Runs of the same task calibrate its estimates when there are any; else all runs do.
    blobs = TINY.replace(dataset="blobs")
    run_experiment(blobs, store)
    assert store_calibration(store, "cpu", like=TINY).runs == 2
    assert store_calibration(store, "cpu", like=blobs).runs == 1
    assert store_calibration(store, "cpu", like=TINY.replace(dataset="spirals")).runs == 3


def test_memory_refusal_says_what_to_lower(tmp_path):
    config = ExperimentConfig(width=4096, depth=8, k=32, device="cpu", pairs="all")
    need = cost.memory_need(config)
    assert need["paths"] > need["minima"] > 0  # 496 paths of 8 images each
    with pytest.raises(ValueError, match=r"paths stage needs about .* GiB .* 496 paths, but "
                                         r"cpu has 1\.0 GiB free; use pairs 'mst'"):
        cost.check_memory(config, 2**30, "cpu")
    cost.check_memory(TINY, 2**30, "cpu")  # fits: no error
    with JobManager(ResultStore(tmp_path)) as manager:
        with pytest.raises(ValueError, match="cannot fit in memory"):
            manager.submit_run(ExperimentConfig(width=60_000, depth=50, device="cpu"))
        with pytest.raises(ValueError, match="cannot fit in memory"):
            manager.submit_sweep(TINY, widths=[8, 60_000], depths=[50])
        assert manager.jobs() == []


def test_bench_estimate_on_two_tiny_presets(monkeypatch, capsys):
    from lossbarcode import choices
    from lossbarcode.bench import estimate as bench_estimate

    tiny = choices.PRESETS["tiny"]
    # c: a task of its own whose paths NEB converges (on blobs, the string cross-check of
    # unconverged pairs takes 20 s a run).
    monkeypatch.setattr(bench_estimate, "PRESETS", {
        "a": tiny, "b": (tiny[0], {**tiny[1], "seed": 1, "k": 3}),
        "c": (tiny[0], {**tiny[1], "dataset": "mnist1d", "width": 16})})
    rows = bench_estimate.estimate_benchmark(("a", "b", "c"))
    # c's task is unique: it runs again; each row is calibrated leave-one-out, on same-task
    # runs when there are any, and a task's first run never on its own second run.
    assert [r["preset"] for r in rows] == ["a", "b", "c", "c again"]
    assert [r["calibrated_on"] for r in rows] == ["1 same-task", "1 same-task", "2 other",
                                                 "1 same-task"]
    for row in rows:
        assert row["actual_s"] > 0 and row["model_s"] > 0 and row["calibrated_s"] > 0
        assert row["calibrated_ratio"] == pytest.approx(row["calibrated_s"] / row["actual_s"])
        assert row["within_2x"] == (0.5 <= row["calibrated_ratio"] <= 2)
    bench_estimate.print_estimate_benchmark(rows)
    out = capsys.readouterr().out
    assert "calib. ratio" in out and "worst calibrated factor" in out
    with pytest.raises(ValueError, match="unknown presets"):
        bench_estimate.estimate_benchmark(("nope",))


@pytest.mark.parametrize("name", [*choices.EMBEDDED_DATASETS, *choices.PACKAGE_DATASETS,
                                  "fashion_mnist"])
def test_the_cost_model_knows_each_dataset_as_it_loads(name):
    """choices.DATASET_SHAPES (what the cost model reads without loading) is what data.load
    gives for every bundled, synthetic or generated set, and for real Fashion-MNIST (Debian's
    copy) where it is installed."""
    from lossbarcode.data import load
    from lossbarcode.datafiles import missing_files

    assert set(choices.DATASET_SHAPES) == set(choices.DATASETS)
    if name == "fashion_mnist" and missing_files(name, None) is not None:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    shape, outputs, n_train, n_test = choices.DATASET_SHAPES[name]
    ds = load(name)
    assert (ds.input_shape, ds.n_outputs) == (shape, outputs)
    assert (len(ds.x_train), len(ds.x_test)) == (n_train, n_test)
