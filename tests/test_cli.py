"""The command-line interface, end to end on tiny inputs."""

import subprocess
import sys

import pytest

from lossbarcode.bench.topology import topology_benchmark
from lossbarcode.cli import main


def test_topology_benchmark_agrees_with_ripser_on_every_case():
    rows = topology_benchmark(grid_sizes=(15, 31), knn_points=400, repeat=1, noise_size=25)
    assert [r["case"].split()[0] for r in rows] == ["grid", "grid", "grid", "kNN"]
    for row in rows:
        assert row["bars"] == row["ripser_bars"] > 0
        assert row["ours_s"] > 0 and row["ripser_s"] > 0
        assert row["ratio"] == row["ours_s"] / row["ripser_s"]


def test_bench_topology_command_prints_a_table(capsys):
    code = main(["bench", "topology", "--grid-sizes", "11", "--knn-points", "200",
                 "--noise-size", "0", "--repeat", "1"])
    out = capsys.readouterr().out
    assert code == 0
    assert "ratio" in out and "grid 11x11" in out and "kNN graph n=200" in out


def test_module_entry_point_and_help():
    done = subprocess.run([sys.executable, "-m", "lossbarcode", "bench", "topology", "--help"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0
    assert "--grid-sizes" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "lossbarcode", "bench", "nothing"],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_every_config_flag_is_described_once_with_its_default(capsys):
    """The CLI's help is the config's own description (FIELD_HELP) plus the config's default."""
    import dataclasses

    from lossbarcode.experiment import FIELD_HELP, ExperimentConfig

    assert set(FIELD_HELP) == {f.name for f in dataclasses.fields(ExperimentConfig)}
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in ("width", "minima_tol", "path_max_steps", "restarts"):
        words = " ".join(FIELD_HELP[name].split())
        assert f"{words} (default {getattr(ExperimentConfig(), name)!r})" in text
    # Fields whose default is the family's say so, from choices.TRAINING.
    for name in ("optimizer", "lr", "steps", "polish_steps"):
        assert " ".join(FIELD_HELP[name].split()) in text and "the family's" in FIELD_HELP[name]
    assert "0.05 sgd, 0.001 adam" in text  # lr with another optimizer: from choices


# ----------------------------------------------------------------------- datasets: where, missing

TINY_RUN = ["--n-train", "12", "--n-test", "6", "--width", "4", "--depth", "1", "--minima",
            "2", "--steps", "20", "--batch-size", "6", "--images", "1", "--path-steps", "4",
            "--eval-points", "1", "--device", "cpu"]


def test_run_says_when_it_reads_debians_fashion_mnist(tmp_path, monkeypatch, capsys):
    from fake_data import fake_debian_fashion

    copy = fake_debian_fashion(tmp_path, monkeypatch)
    results = tmp_path / "results"
    argv = ["--dataset", "fashion_mnist", "--data-root", str(tmp_path / "data"), *TINY_RUN,
            "--results", str(results)]
    assert main(["run", *argv]) == 0
    captured = capsys.readouterr()
    (notice,) = [line for line in captured.err.splitlines() if line.startswith(
        "lossbarcode: data:")]
    assert f"fashion_mnist from {copy}, installed by Debian's package dataset-fashion-mnist" in (
        notice)
    run_id = captured.out.strip().splitlines()[-1]
    assert main(["show", run_id, "--results", str(results)]) == 0
    assert f"data: {copy}, installed by Debian's package" in capsys.readouterr().out
    # --quiet says nothing; data folder files need no notice
    assert main(["run", "-q", *argv]) == 0
    assert "data:" not in capsys.readouterr().err


@pytest.mark.parametrize(("dataset", "says"), [
    ("fashion_mnist", "apt-get install dataset-fashion-mnist"),
    ("mnist1d", "pip install mnist1d"),
])
def test_a_missing_dataset_exits_2_with_one_line_saying_how_to_get_it(
        tmp_path, monkeypatch, capsys, dataset, says):
    from lossbarcode import datafiles

    monkeypatch.setitem(datafiles.SYSTEM_COPIES, "fashion_mnist",
                        (tmp_path / "not-installed", "dataset-fashion-mnist"))
    monkeypatch.setattr(datafiles, "MNIST1D_PACKAGE", "mnist1d_is_not_installed")
    code = main(["run", "-q", "--dataset", dataset, "--data-root", str(tmp_path), *TINY_RUN,
                 "--results", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("lossbarcode: error:") and says in err


# ----------------------------------------------------------------------- views


def test_views_stores_a_runs_default_views_once_and_refuses_what_is_not_a_run(
        tmp_path, monkeypatch, capsys):
    from lossbarcode import maps, slices
    from lossbarcode.experiment import load_result
    from lossbarcode.slices import default_minima
    from lossbarcode.store import ResultStore
    from lossbarcode.views import default_views

    results = ResultStore(tmp_path / "results")
    assert main(["run", "-q", *TINY_RUN, "--minima", "3", "--results", str(results.root)]) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    r = load_result(results, run_id)
    triple = default_minima(r.diverged)
    assert triple == (0, 1, 2)  # three minima, none diverged: a plane through all three
    before = set(results.stages(run_id))
    assert main(["views", run_id, "--results", str(results.root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out[:-1]] == [v.describe() for v in default_views(
        r.diverged)]
    assert out[-1] == f"the default views of run {run_id} are stored in {results.root / run_id}"
    made = set(results.stages(run_id)) - before
    # Few points: "auto" is PCA, so one map serves both; and the slice at the defaults.
    assert made == {"map-pca-2", "slice-0-1-2-41"}
    assert results.stage_inputs(run_id, "map-pca-2") == maps.INPUTS
    meta, arrays = results.load_stage(run_id, "slice-0-1-2-41")
    assert meta["resolution"] == 41 and meta["margin"] == 0.25 and arrays["loss"].shape == (
        41, 41)

    def computed(*args, **kwargs):
        raise AssertionError("recomputed")

    monkeypatch.setattr(maps, "project", computed)
    monkeypatch.setattr(slices, "build_landscape", computed)
    assert main(["views", "-q", run_id, "--results", str(results.root)]) == 0  # read, not made
    assert capsys.readouterr().err == ""
    for bad, says in (("0123456789abcdef", "no finished run"), ("../../etc", "run id"),
                      ("", "run id")):
        assert main(["views", bad, "--results", str(results.root)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("lossbarcode: error:") and says in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    done = subprocess.run([sys.executable, "-m", "lossbarcode", "views", "f" * 16, "--results",
                           str(results.root)], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "no finished run" in done.stderr and "Traceback" not in done.stderr
