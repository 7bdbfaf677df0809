"""The sweep file format (read, check, write, append) and sweep command lines."""

import json
from pathlib import Path

import pytest

from lossbarcode.cli import parse_sweep_command
from lossbarcode.experiment import ExperimentConfig, run_experiment
from lossbarcode.store import ResultStore
from lossbarcode.sweep import (
    fullest_value,
    read_sweep_file,
    summarize,
    sweep_commands,
    sweep_configs,
    sweep_family,
    sweep_resolution,
    write_sweep_file,
)

ROOT = Path(__file__).resolve().parents[1]
TINY = ExperimentConfig(n_train=200, n_test=100, width=8, depth=1, k=3, steps=30,
                        batch_size=32, images=2, path_steps=10, eval_points=2, device="cpu")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    store = ResultStore(tmp_path_factory.mktemp("results"))
    return [run_experiment(TINY.replace(width=w), store) for w in (4, 8)]


def test_a_written_sweep_file_reads_back_and_appends(results, tmp_path):
    path = tmp_path / "sweep.json"
    records = write_sweep_file(path, results[:1], "lossbarcode sweep --widths 4")
    assert [r["run_id"] for r in records] == [results[0].run_id]
    merged = write_sweep_file(path, results, "lossbarcode sweep --widths 4,8", append=True)
    assert sorted(r["run_id"] for r in merged) == sorted(r.run_id for r in results)
    document = read_sweep_file(path)
    assert sweep_commands(document) == ["lossbarcode sweep --widths 4",
                                        "lossbarcode sweep --widths 4,8"]
    assert set(document["barcodes"]) == {r.run_id for r in results}
    assert len(document["records"]) == 2
    assert document["summary"] == summarize(document["records"])


def test_a_sweep_file_without_barcodes_or_with_one_command_string_reads(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"command": "lossbarcode sweep", "records": []}))
    document = read_sweep_file(path)
    assert document["barcodes"] == {} and sweep_commands(document) == ["lossbarcode sweep"]


@pytest.mark.parametrize("content, says", [
    ("[1, 2]", "not an object"), ('{"foo": 1}', "no list of 'records'"),
    ('{"records": [{"width": 4}]}', "a record lacks"), ("{oops", "not a sweep JSON file"),
    ('{"records": [], "barcodes": []}', "'barcodes' is not an object"),
])
def test_a_file_of_another_shape_is_refused_with_the_reason(tmp_path, content, says):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=says):
        read_sweep_file(path)


def test_the_demo_sweep_command_parses_to_its_configs():
    document = read_sweep_file(ROOT / "assets" / "demo_sweep.json")
    (command,) = sweep_commands(document)
    base, axes = parse_sweep_command(command)
    ids = sorted(c.run_id for c in sweep_configs(base, **axes))
    assert ids == sorted(r["run_id"] for r in document["records"])
    assert len({sweep_family(c) for c in sweep_configs(base, **axes)}) == 1
    with pytest.raises(ValueError, match="not a 'lossbarcode sweep' command"):
        parse_sweep_command("lossbarcode run --width 4")


def test_resolution_and_the_base_of_a_cross():
    rows = [{"to_score_floor": 0.1, "bars_certified": 2, "bars_finite": 3},
            {"to_score_floor": 0.3, "bars_certified": 1, "bars_finite": 3}]
    assert sweep_resolution(rows) == (0.3, 3, 6)
    assert sweep_resolution([{"to_score_floor": None}]) == (None, 0, 0)
    cross = [{"width": w, "depth": 2} for w in (4, 8, 16)] + [{"width": 4, "depth": 1}]
    assert fullest_value(cross, "width", "depth", [1, 2]) == 2


def test_a_comma_list_is_read_one_way_for_the_cli_and_the_dashboard():
    from lossbarcode.sweep import axis_values

    assert axis_values("4, 8,16", "widths") == [4, 8, 16]
    for bad, why in (("4,x", "comma list of integers"), (" , ", "at least one value")):
        with pytest.raises(ValueError, match=why):
            axis_values(bad, "--widths")


def test_sweep_trends_read_the_claim_from_the_data_and_its_intervals():
    from test_confidence import barcode

    from lossbarcode.sweep import sweep_trends

    records, barcodes = [], {}
    # A cross: widths at depth 2 fall clearly; depths at width 8 overlap.
    scales = [(w, 2, 1.0 / w) for w in (4, 8, 16, 32)] + [(8, d, 0.1) for d in (1, 3)]
    for w, d, size in scales:
        for seed in range(3):
            run_id = f"w{w}d{d}s{seed}"
            lengths = [size * (1 + 0.02 * seed), size * (1 - 0.01 * seed)]
            if d != 2:  # the depth curve: wide spread within each scale
                lengths = [0.01 + 0.3 * seed, 0.2]
            barcodes[run_id] = barcode(lengths)
            records.append({"run_id": run_id, "arch": "fcn", "width": w, "depth": d,
                            "seed": seed, "k": 3, "minima_certified": 3, "broken": False,
                            "score_variant": "l2", "path_atol": 1e-4, "bars_certified": 2,
                            "bars_finite": 2})
    trends = {key: t for key, (t, _) in sweep_trends(records, barcodes).items()}
    assert trends[("fcn", "width")].verdict == "decreasing"
    assert trends[("fcn", "width")].values == (4, 8, 16, 32)
    assert trends[("fcn", "depth")].verdict == "not resolved"
    # Upper bounds make no trend: the narrowest scale's deaths uncertified, it is left out.
    for r in records:
        if r["width"] == 4:
            r["bars_certified"] = 0
    trend, left = sweep_trends(records, barcodes)[("fcn", "width")]
    assert trend.values == (8, 16, 32) and left == ["4 (0/6)"]
    # Runs that cannot enter a curve do not make a trend either.
    for r in records:
        r["broken"] = True
    assert sweep_trends(records, barcodes) == {}
    assert sweep_trends(records, barcodes, include_broken=True)
