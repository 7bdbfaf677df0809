"""lossbarcode reproduce: plans, verdicts only from complete settings, reports that read back."""

import json
from pathlib import Path

import pytest

from lossbarcode import choices, reproduce
from lossbarcode.cli import main
from lossbarcode.store import ResultStore
from lossbarcode.sweep import read_sweep_file

ROOT = Path(__file__).resolve().parent.parent


def test_the_cpu_scale_on_digits_fcn_is_the_shipped_demo_sweep_run_for_run():
    (setting,) = reproduce.plan("cpu", ["fcn"], ["digits"])
    demo = read_sweep_file(ROOT / "assets" / "demo_sweep.json")
    assert {c.run_id for c in setting.configs()} == {r["run_id"] for r in demo["records"]}


def test_the_plan_gives_each_family_its_data_and_caps_only_larger_datasets():
    settings = {s.name: s for s in reproduce.plan("cpu", ["fcn", "transformer"],
                                                  ["digits", "fashion_mnist"])}
    assert set(settings) == {"digits fcn", "fashion_mnist fcn",
                             f"{choices.REPRODUCE_SEQUENCE_DATASET} transformer"}
    spec = choices.REPRODUCE_SCALES["cpu"]
    assert settings["fashion_mnist fcn"].base.n_train == spec["n_train"]
    assert settings["digits fcn"].base.n_train is None  # smaller than the cap: all of it
    for s in settings.values():
        configs = s.configs()
        assert len(configs) == len(set(c.run_id for c in configs))
        assert {c.width for c in configs if c.depth == s.base.depth} == set(s.widths)
        assert {c.depth for c in configs if c.width == s.base.width} == set(s.depths)
        assert all(c.k == spec["k"] for c in configs)


@pytest.mark.parametrize("kwargs, flag", [({"scale": "huge"}, "--scale"),
                                          ({"archs": ["mlp"]}, "--archs"),
                                          ({"datasets": ["modadd"]}, "--datasets"),
                                          ({"archs": []}, "--archs")])
def test_bad_choices_name_their_flag(kwargs, flag):
    with pytest.raises(ValueError, match=flag):
        reproduce.plan(**kwargs)


def test_a_setting_with_runs_missing_gets_no_verdict_and_says_what_is_missing(tmp_path):
    (setting,) = reproduce.plan("tiny", ["fcn"], ["digits"])
    section = reproduce.measure_setting(setting, ResultStore(tmp_path))
    assert {c["verdict"] for c in section["claims"]} == {"missing runs"}
    reason = section["claims"][0]["reason"]
    assert f"{len(setting.configs())} runs not computed" in reason
    assert all(f"width {w} depth {setting.base.depth}" in reason for w in setting.widths)
    assert section["runs"] == {"planned": len(setting.configs()), "done": 0, "curve_ready": 0}


def test_the_cli_states_the_cost_first_and_refuses_a_folder_it_cannot_write(tmp_path, capsys):
    assert main(["reproduce", "--scale", "tiny", "--archs", "fcn", "--datasets", "digits",
                 "--estimate", "--results", str(tmp_path / "r")]) == 0
    out = capsys.readouterr()
    assert "digits fcn" in out.out and "the cost model estimates" in out.err
    blocker = tmp_path / "file"
    blocker.write_text("")
    code = main(["reproduce", "--scale", "tiny", "--archs", "fcn", "--datasets", "digits",
                 "--report-only", "--results", str(tmp_path / "r"),
                 "--output", str(blocker / "report")])
    err = capsys.readouterr().err
    assert code == 2 and "--output: cannot write the report" in err
    assert len(err.strip().splitlines()) == 2  # the cost line, then one error line


@pytest.mark.slow
def test_a_small_reproduction_reports_every_claim_and_resumes(tmp_path, monkeypatch):
    micro = {"k": 3, "seeds": (0, 1), "n_train": 150, "n_test": 100, "axes": {
        # Width 4 and 6 nets take 10x longer (their paths need the string cross-check).
        "fcn": {"widths": (8, 16, 32), "depth": 1, "depths": (1, 2), "width": 8}}}
    monkeypatch.setitem(choices.REPRODUCE_SCALES, "micro", micro)
    fast = {"steps": 300, "images": 2, "path_max_steps": 200, "eval_points": 2,
            "device": "cpu"}
    settings = reproduce.plan("micro", ["fcn"], ["digits"], **fast)
    store = ResultStore(tmp_path / "results")
    assert reproduce.run(settings, store) == {}
    report = reproduce.measure(settings, store, "micro", "test")
    (section,) = report["settings"]
    assert [c["claim"] for c in section["claims"]] == ["width", "depth", "generalization"]
    assert all(c["verdict"] in reproduce.VERDICTS and c["verdict"] != "missing runs"
               for c in section["claims"])
    assert section["runs"]["done"] == 8 and section["minima"]["total"] == 24
    paths = reproduce.write_report(report, tmp_path / "report")
    assert [p.name for p in paths] == list(reproduce.REPORT_FILES)
    back = reproduce.read_report(tmp_path / "report")
    assert back["settings"][0]["claims"][0]["verdict"] == section["claims"][0]["verdict"]
    json.loads(paths[0].read_text())  # strict JSON: no NaN
    page = paths[2].read_text()
    assert "plotly" in page.lower() and section["claims"][0]["verdict"] in page
    # A run lost (or never finished): the report says so instead of giving verdicts.
    lost = settings[0].configs()[-1]
    for f in (tmp_path / "results" / lost.run_id).iterdir():
        f.unlink()
    again = reproduce.measure(settings, store, "micro", "test")["settings"][0]
    assert {c["verdict"] for c in again["claims"]} == {"missing runs"}
    assert f"width {lost.width} depth {lost.depth}" in again["claims"][0]["reason"]


def test_a_file_that_is_not_a_report_is_refused(tmp_path):
    bad = tmp_path / "report.json"
    bad.write_text(json.dumps({"records": []}))
    with pytest.raises(ValueError, match="not a reproduction report"):
        reproduce.read_report(tmp_path)
