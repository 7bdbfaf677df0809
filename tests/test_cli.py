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
