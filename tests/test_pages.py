"""AppTest of every dashboard page against a temporary results folder with tiny finished runs."""

import base64
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from lossbarcode import choices, plots
from lossbarcode.choices import PRESETS
from lossbarcode.experiment import ExperimentConfig, load_result, run_experiment
from lossbarcode.store import ResultStore
from lossbarcode.sweep import summarize

ROOT = Path(__file__).resolve().parents[1]
TINY = ExperimentConfig(**PRESETS["tiny"][1])  # the Explore page's tiny preset
ANNEALED = TINY.replace(schedule="anneal")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A results folder with two tiny finished runs (constant and annealed lr) and a demo
    sweep file, made once per module; the environment points the app at both."""
    root = tmp_path_factory.mktemp("results")
    results = ResultStore(root)
    runs = [run_experiment(config, results) for config in (TINY, ANNEALED)]
    barcode = runs[0].barcode.to_dict()
    records = [{"run_id": f"demo{w}{d}{s}", "dataset": "digits", "arch": "fcn", "width": w,
                "depth": d, "seed": s, "k": 4, "n_params": 100 * w * d,
                "to_score": 1.0 / (w * d) + 0.01 * s, "score_variant": "l2",
                "train_loss": 0.1, "test_error": 0.2, "n_diverged": 0, "paths_version": 2,
                "paths_converged": 6, "n_paths": 6, "bars_certified": 3, "bars_finite": 3,
                "minima_certified": 4, "path_atol": 1e-4, "health": "healthy", "broken": False}
               for w in (4, 8, 16) for d in (1, 2) for s in (0, 1)]
    demo = root.parent / "demo_sweep.json"
    demo.write_text(json.dumps({
        "command": "lossbarcode sweep --widths 4,8,16 --depths 1,2 --seeds 0,1",
        "description": "test sweep", "score_variant": "l2", "records": records,
        "barcodes": {r["run_id"]: barcode for r in records if r["seed"] == 0},
    }))  # no "summary": the page computes it
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOSSBARCODE_RESULTS", str(root))
        mp.setenv("LOSSBARCODE_DEMO_SWEEP", str(demo))
        yield {"root": root, "runs": runs, "demo": demo}


def app(page: str | None = None, **params: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    if page is not None:
        at.switch_page(f"pages/{page}.py").run()
    return at


def settle(at: AppTest, timeout: float = 90) -> AppTest:
    """Rerun until the page's background view (map, slice) has finished."""
    deadline = time.time() + timeout
    while (any("updates by itself" in e.value for e in [*at.info, *at.caption])
           or any("Estimating the cost" in e.value for e in at.caption)):
        assert time.time() < deadline, "background view did not finish"
        time.sleep(0.3)
        at.run()
    return at


def texts(elements) -> str:
    return " ".join(str(e.value) for e in elements)


def picker(at: AppTest, label: str = "Show run"):
    """The run picker (its key names the run it opened on, so find it by its label)."""
    return next(s for s in at.selectbox if s.label == label)


def charts(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def array(value) -> np.ndarray:
    """A figure array from its JSON: a list, or plotly's typed array (base64 + dtype)."""
    if isinstance(value, dict) and "bdata" in value:
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = value.get("shape")
        if isinstance(shape, str):
            shape = [int(v) for v in shape.split(",")]
        return flat.reshape(shape) if shape else flat
    return np.asarray(value)


def test_widget_choices_match_the_library():
    from lossbarcode import choices as ui  # the pages' widgets read their choices from here
    from lossbarcode import data, minima, models, paths

    assert ui.DATASETS == data.DATASETS and ui.ARCHS == models.ARCHS
    assert ui.OPTIMIZERS == minima.OPTIMIZERS and ui.SCHEDULES == minima.SCHEDULES
    assert ui.PATH_METHODS == paths.METHODS and ui.PAIRINGS == paths.PAIRINGS
    # The rule and norm widgets read the library's tuples themselves.
    assert "from lossbarcode.topology import NORMS, RULES" in (ROOT / "pages" / "explore.py"
                                                              ).read_text()


def test_explore_shows_the_latest_run_and_highlights_a_minimum(store):
    at = settle(app())
    assert not at.exception
    assert at.title[0].value == "Explore a run"
    run = store["runs"][1]  # the most recent
    assert at.query_params["run"] == run.run_id
    assert at.metric[0].label == "TO-score (l2)"
    figures = charts(at)
    # Barcode, diagram, profiles; the barrier against step only while a path is unconverged
    # (its expander opens then).
    assert len(figures) == 3 + (not run.path_converged.all())
    assert len(figures[2]["data"]) == len(run.pairs) + 1
    if len(figures) == 4:
        assert len(figures[3]["data"]) == len(run.pairs)  # one history per path
    done, bars = run.certified
    assert at.metric[0].delta == f"{done}/{bars} certified"
    assert f"Bars certified: {done} of the {bars}" in at.metric[0].help
    assert at.metric[1].delta in ("healthy", "caution", "broken")
    # Metric badges were cut off at ~16 characters in a fifth of a 1440 px page
    # ("↑ 3/3 bars certif…"): every badge on the page fits, and none has an arrow.
    for metric in at.metric:
        assert len(metric.delta or "") <= 16, metric.delta
    no_arrow = type(at.metric[0].proto).MetricDirection.Value("NONE")
    assert all(m.proto.direction == no_arrow for m in at.metric[:2])
    assert "converged" in texts(at.caption)
    # Its bars are all within the barrier resolution: the score says it is not resolved.
    assert run.resolved[0] == 0 < run.resolved[1]  # the premise (tiny runs: ~1e-5 bars)
    assert "TO-score not resolved from 0" in texts(at.caption)
    assert "not resolved from 0" in at.metric[0].help
    assert "(not resolved from 0)" in figures[0]["layout"]["title"]["text"]
    # The minima table and the paths' convergence table.
    tables = {"paths" if "pair" in d.value.columns else "bars" if "spread" in d.value.columns
              else "minima": d.value for d in at.dataframe}
    # The minima, the bars (why each is or is not certified) and, while a path is
    # unconverged (its expander open), the paths' convergence.
    assert len(at.dataframe) == len(tables) == len(figures) - 1
    assert len(tables["minima"]) == run.k
    if "paths" in tables:
        assert len(tables["paths"]) == len(run.pairs)
        assert {"converged", "stalled", "steps", "perp_grad", "top_grad"} <= set(
            tables["paths"].columns)
    assert len(tables["bars"]) == len(run.barcode)
    assert {"certified", "why_not", "grad_norm"} <= set(tables["minima"].columns)
    assert "Estimated" in texts(at.sidebar.caption)
    assert len(at.get("download_button")) == 4
    at.selectbox(key="highlight").set_value(1).run()
    assert not at.exception
    assert at.query_params["minimum"] == "1"
    assert "Minimum 1" in texts(at.info)
    barcode = charts(at)[0]["data"][0]
    bar = array(barcode["customdata"])[:, 0].tolist().index(1)
    assert array(barcode["marker"]["line"]["width"])[bar] == 2.5


def test_explore_opens_a_shared_link_and_reports_unknown_runs(store):
    first = store["runs"][0]
    at = app(run=first.run_id, minimum="2")
    assert not at.exception
    assert picker(at).value == first.run_id
    assert at.selectbox(key="highlight").value == 2
    at = app(run="0123456789abcdef")
    assert not at.exception and "not in the results folder" in texts(at.warning)
    at = app(run="../../etc")
    assert not at.exception


def test_explore_runs_the_tiny_preset_and_rejects_bad_configs(store):
    at = settle(app(preset="tiny"))
    assert at.sidebar.selectbox(key="preset").value == "tiny"
    assert at.sidebar.number_input(key="cfg_width").value == 8
    settle(at.sidebar.button[0].click().run())  # same config as the stored run: done at once
    assert not at.exception
    assert at.query_params["run"] == TINY.run_id
    assert picker(at).value == TINY.run_id
    assert "Already computed" in texts(at.sidebar.caption)
    settle(at.sidebar.selectbox(key="cfg_arch").set_value("transformer").run())
    assert not at.exception
    assert "sequence dataset" in texts(at.sidebar.error)
    assert at.sidebar.button[0].disabled
    settle(at.sidebar.selectbox(key="preset").set_value("default").run())
    assert not at.exception and not at.sidebar.error
    assert at.sidebar.number_input(key="cfg_width").value == 32


def test_explore_asks_before_a_long_run_and_refuses_what_cannot_fit(store):
    from lossbarcode.cost import CONFIRM_ABOVE_S
    from pages import _jobs as ui

    config = TINY.replace(steps=2_000_000, seed=11)  # minutes of training steps
    at = settle(app(preset="tiny"))
    at.sidebar.number_input(key="cfg_steps").set_value(2_000_000).run()
    settle(at.sidebar.number_input(key="cfg_seed").set_value(11).run())
    manager = ui._manager(str(store["root"]))
    assert manager.estimate(config)["seconds"] > CONFIRM_ABOVE_S
    at.sidebar.button(key="run_experiment").click().run()
    assert not at.exception
    assert manager.status(config.run_id) is None  # the first click only asks
    assert "Start it?" in texts(at.sidebar.warning)
    confirm = next(b for b in at.sidebar.button if b.label.startswith("Confirm: start (est."))
    confirm.click().run()
    assert not at.exception
    try:
        assert manager.status(config.run_id) is not None  # the confirm click started it
    finally:
        manager.cancel(config.run_id)
    assert manager.wait(config.run_id, timeout=60).finished
    # A config that cannot fit in memory: Run is disabled, and the reason says what to lower.
    at.sidebar.number_input(key="cfg_width").set_value(4096).run()
    at.sidebar.number_input(key="cfg_depth").set_value(64).run()
    settle(at.sidebar.number_input(key="cfg_k").set_value(64).run())
    assert not at.exception
    assert "cannot fit in memory" in texts(at.sidebar.error)
    assert "use fewer minima K" in texts(at.sidebar.error)
    assert at.sidebar.button(key="run_experiment").disabled


def test_explore_live_progress_then_result(store):
    config = TINY.replace(seed=3)
    at = app(preset="tiny")
    at.sidebar.number_input(key="cfg_seed").set_value(3).run()
    at.sidebar.button[0].click().run()
    assert not at.exception
    assert at.query_params["run"] == config.run_id
    from pages import _jobs as ui

    status = ui._manager(str(store["root"])).wait(config.run_id, timeout=120)
    assert status.state == "done", status
    at.run()
    assert not at.exception
    assert picker(at).value == config.run_id
    assert len(charts(at)) >= 3  # barcode, diagram, profiles (+ barrier against step)


def test_two_sessions_asking_for_one_run_compute_it_once(store):
    from pages import _jobs as ui

    config = TINY.replace(seed=5)
    sessions = [settle(app(preset="tiny")) for _ in range(2)]
    for at in sessions:
        settle(at.sidebar.number_input(key="cfg_seed").set_value(5).run())
    for at in sessions:
        at.sidebar.button[0].click().run()
        assert not at.exception
    manager = ui._manager(str(store["root"]))
    assert [j.job_id for j in manager.jobs()].count(config.run_id) == 1
    assert manager.wait(config.run_id, timeout=120).state == "done"
    for at in sessions:
        at.run()
        assert picker(at).value == config.run_id
        assert len(charts(at)) >= 3  # barcode, diagram, profiles (+ barrier against step)


def test_explore_cancel_a_running_job(store):
    from pages import _jobs as ui

    config = TINY.replace(steps=20_000, seed=6)  # long enough to be cancelled while running
    at = settle(app(preset="tiny"))
    at.sidebar.number_input(key="cfg_steps").set_value(20_000).run()
    settle(at.sidebar.number_input(key="cfg_seed").set_value(6).run())
    at.sidebar.button[0].click().run()
    confirm = [b for b in at.sidebar.button if b.label.startswith("Confirm: start")]
    if confirm:  # estimated above the threshold on a slow machine: confirm it
        confirm[0].click().run()
    manager = ui._manager(str(store["root"]))
    deadline = time.time() + 60
    while manager.status(config.run_id).state != "running" and time.time() < deadline:
        time.sleep(0.1)
    at.run()
    assert not at.exception
    assert len(at.get("progress")) == 1
    cancel = next(b for b in at.button if b.label == "Cancel")
    cancel.click().run()
    assert manager.wait(config.run_id, timeout=60).state == "cancelled"
    at.run()
    assert not at.exception
    assert "cancelled" in texts(at.info)
    assert not at.get("progress")
    # The words and the URL: cancelled (not "not in the results folder"), and the URL names
    # the run on screen.
    assert "not in the results folder" not in texts(at.warning)
    assert at.query_params.get("run") in (None, picker(at).value if at.selectbox else None)


def test_scaling_reads_the_demo_sweep_and_overlays_barcodes(store):
    at = app("scaling")
    assert not at.exception
    assert at.sidebar.selectbox(key="sweep_source").value == "demo"
    figures = charts(at)
    assert len(figures) == 3  # vs width, vs depth, overlay
    assert len(figures[0]["data"]) == 4  # 2 depths x (mean, seeds)
    assert figures[0]["layout"]["xaxis"]["type"] == "log"
    assert [t["name"] for t in figures[2]["data"][:3]] == ["width 4", "width 8", "width 16"]
    # auto: a log TO-score axis exactly when the curves span decades.
    summary = summarize(json.loads(store["demo"].read_text())["records"])
    floor = summary[0]["to_score_floor"]
    assert floor == pytest.approx(1e-4 * 3**0.5)  # three bars, each resolved to path_atol
    spans = plots.spans_decades([r["to_score_mean"] for r in summary], floor)
    expected = "log" if spans else "linear"
    # The resolution floor is drawn, and the certified bars are counted.
    assert any(s.get("y0") == pytest.approx(floor) for s in figures[0]["layout"]["shapes"])
    assert "36/36 finite bars certified" in texts(at.caption)
    # The claim is read from the data: every scale here has the same barcode, so no trend.
    assert "fcn, along width" in texts(at.markdown)
    assert "not resolved" in texts(at.markdown)
    assert figures[0]["layout"]["yaxis"]["type"] == expected
    at.sidebar.radio[0].set_value("log").run()
    assert charts(at)[0]["layout"]["yaxis"]["type"] == "log"
    at.sidebar.radio[0].set_value("linear").run()
    assert charts(at)[0]["layout"]["yaxis"]["type"] == "linear"
    at.main.radio[0].set_value("depth").run()
    assert not at.exception
    assert [t["name"] for t in charts(at)[2]["data"][:2]] == ["depth 1", "depth 2"]
    at.toggle(key="overlay_normalized").set_value(True).run()
    overlay = charts(at)[2]
    assert "normalised" in overlay["layout"]["xaxis"]["title"]["text"]
    for trace in overlay["data"][:2]:  # each run's lowest minimum at 0, top finite death at 1
        base, width = array(trace["base"]), array(trace["x"])
        assert base.min() == pytest.approx(0)
        assert np.max(base + width, where=base + width < overlay["layout"]["xaxis"]["range"][1],
                      initial=0) == pytest.approx(1)
    at.text_input(key="sw_widths").set_value("4,x").run()
    assert "comma list of integers" in texts(at.error)


def test_scaling_on_a_sweep_whose_runs_are_all_broken(store, tmp_path, monkeypatch):
    """Regression (issue 20): an IndexError traceback, under a banner calling the sweep old."""
    data = json.loads(store["demo"].read_text())
    for r in data["records"]:
        r.update(minima_certified=1, health="broken: 3 uncertified minima", broken=True)
    demo = tmp_path / "broken_sweep.json"
    demo.write_text(json.dumps(data))
    monkeypatch.setenv("LOSSBARCODE_DEMO_SWEEP", str(demo))
    monkeypatch.setenv("LOSSBARCODE_RESULTS", str(tmp_path / "empty"))
    at = app("scaling")
    assert not at.exception
    n = len(data["records"])
    assert f"{n} of {n} runs are broken" in texts(at.warning)
    assert "made before paths were optimised" not in texts(at.warning)
    assert "No run of this sweep can enter a curve" in texts(at.info)
    before = len(charts(at))
    include = next(t for t in at.sidebar.toggle if t.label.startswith(f"Include {n} runs"))
    include.set_value(True).run()
    assert not at.exception
    assert "included in the curves" in texts(at.warning)
    assert len(charts(at)) == before + 2  # TO-score vs width and vs depth


def test_scaling_launches_a_sweep_from_the_page(store):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90)
    at.session_state["explore_config"] = TINY.to_dict()
    at.run()
    at.switch_page("pages/scaling.py").run()
    at.text_input(key="sw_widths").set_value("6,8").run()
    at.text_input(key="sw_depths").set_value("1").run()
    settle(at.text_input(key="sw_seeds").set_value("0").run())
    assert "2 runs (1 already finished)" in texts(at.caption)
    launch = next(b for b in at.button if b.label == "Launch sweep")
    launch.click().run()
    assert not at.exception
    job = at.session_state["sweep_job"]
    from pages import _jobs as ui

    assert ui._manager(str(store["root"])).wait(job, timeout=120).state == "done"
    at.run()
    assert not at.exception
    source = at.sidebar.selectbox(key="sweep_source")
    assert source.value != "demo" and "runs)" in source.format_func(source.value)
    assert len(charts(at)) >= 2


def test_scaling_asks_before_a_long_sweep(store):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90)
    at.session_state["explore_config"] = TINY.to_dict()
    at.run()
    at.switch_page("pages/scaling.py").run()
    at.number_input(key="sw_steps").set_value(2_000_000).run()
    at.text_input(key="sw_widths").set_value("6,7").run()
    settle(at.text_input(key="sw_seeds").set_value("9").run())
    next(b for b in at.button if b.label == "Launch sweep").click().run()
    assert not at.exception
    from pages import _jobs as ui

    wanted = TINY.replace(width=6, steps=2_000_000, seed=9).run_id
    manager = ui._manager(str(store["root"]))
    assert not any(wanted in j.run_ids for j in manager.jobs())  # the first click only asks
    assert "Start it?" in texts(at.warning)
    assert any(b.label.startswith("Confirm: start (est.") for b in at.button)
    next(b for b in at.button if b.label == "Back").click().run()
    assert not any(b.label.startswith("Confirm") for b in at.button)
    # Recomputing the demo sweep asks too when it is estimated above the threshold.
    demo = next((b for b in at.button if b.label == "Recompute the demo sweep"), None)
    assert demo is not None and "estimated" in demo.help


def test_minima_map_2d_and_3d(store):
    run = store["runs"][0]
    at = settle(app("minima_map", run=run.run_id))
    assert not at.exception
    figure = charts(at)[0]
    names = [t.get("name") for t in figure["data"]]
    assert "minima" in names and len(figure["data"]) >= run.k  # minima + a line per path
    at.sidebar.selectbox[1].set_value("segment length").run()
    settle(at)
    assert not at.exception
    at.sidebar.radio[0].set_value("3").run()
    settle(at)
    assert not at.exception
    assert charts(at)[0]["data"][-1]["type"] == "scatter3d"
    assert at.query_params["dim"] == "3"


def test_landscape_slice(store):
    run = store["runs"][0]
    at = settle(app("landscape_slice", run=run.run_id, minima="0,1,3"))
    assert not at.exception
    assert at.sidebar.multiselect[0].value == [0, 1, 3]
    figures = charts(at)
    assert len(figures) == 2
    assert figures[0]["data"][-1]["name"] == "trained minima"
    at.sidebar.radio[0].set_value("surface").run()
    settle(at)
    assert not at.exception and charts(at)[0]["data"][0]["type"] == "surface"
    at.sidebar.multiselect[0].set_value([0, 1]).run()
    assert "exactly three" in texts(at.info)


@pytest.fixture
def demo_results(tmp_path, monkeypatch):
    """A results folder holding a copy of the shipped demo runs: fcn 8×2, whose 7 bars are
    resolved, and the default width 32, whose bars are all within the resolution (a rank
    test of the tiny runs' bars would rank round-off: they tie at 0)."""
    root = tmp_path / "results"
    shutil.copytree(ROOT / "assets" / "demo_runs", root)
    monkeypatch.setenv("LOSSBARCODE_RESULTS", str(root))
    return [r for r in (load_result(ResultStore(root), p.name) for p in sorted(root.iterdir()))]


def test_generalization_pools_the_selected_runs(demo_results):
    narrow = next(r for r in demo_results if r.config.width == 8)
    wide = next(r for r in demo_results if r.config.width == 32)
    assert narrow.resolved[0] >= 3 and wide.resolved[0] == 0  # the premise
    ids = [narrow.run_id, wide.run_id]
    at = app("generalization", runs=ids[0])
    assert not at.exception
    assert at.sidebar.multiselect[0].value == [ids[0]]
    at.sidebar.multiselect[0].set_value(ids).run()
    assert not at.exception
    assert at.query_params["runs"] == ids
    assert charts(at), (texts(at.info), texts(at.warning))
    figure = charts(at)[0]
    assert len(figure["data"]) == 2  # one trace per run
    assert figure["data"][0]["marker"]["symbol"] != figure["data"][1]["marker"]["symbol"]
    n = sum(len(array(t.get("x", []))) for t in figure["data"])
    metrics = {m.label: m for m in at.metric}
    assert metrics["n minima"].value == str(n)
    # The wide run's lengths are within the resolution: plotted and counted at 0.
    assert set(array(figure["data"][1]["x"]).tolist()) == {0.0}
    # Permutation p-values, said how they were made; never the asymptotic "0".
    for label in ("p (pooled)", "p (within runs)"):
        assert metrics[label].value != "0"
    assert "permutation" in metrics["p (pooled)"].help
    assert "resolution" in texts(at.caption)
    # The runs differ in width: pooling them is flagged, the within-run test offered.
    assert "differ in width (8, 32)" in texts(at.warning)
    assert "within runs" in figure["layout"]["title"]["text"]
    assert len(at.dataframe[0].value) == 2  # a row (rho, p, n) per run
    at.sidebar.radio[0].set_value("test loss").run()
    assert not at.exception
    at.sidebar.multiselect[0].set_value(ids[:1]).run()
    assert not at.exception and "differ in" not in texts(at.warning)


def test_compare_two_runs(store):
    a, b = store["runs"]
    at = app("compare", run=a.run_id, run2=b.run_id)
    assert not at.exception
    assert len(charts(at)) == 4
    labels = [m.label for m in at.metric]
    assert "Bottleneck distance" in labels and "Wasserstein distance" in labels
    assert "schedule" in str(at.dataframe[0].value)
    at = app("compare", run=a.run_id, run2=a.run_id)
    assert not at.exception and "same run" in texts(at.info)


def test_method_page_worked_example():
    at = app("method")
    assert not at.exception
    assert at.metric[0].value == "2.693"
    at.radio[0].set_value("direct").run()
    assert at.metric[0].value == "4.123"
    assert "2012.15834" in " ".join(m.value for m in at.markdown)


def test_toy_page_state_in_the_url():
    at = app("toy_landscapes", toy="himmelblau")
    assert not at.exception
    assert at.sidebar.selectbox[0].value == "himmelblau"
    animation = charts(at)[0]  # the teaching view: frames scrubbed by the in-figure slider
    assert len(animation["frames"]) == len(animation["layout"]["sliders"][0]["steps"]) > 1
    assert animation["layout"]["updatemenus"][0]["buttons"][0]["method"] == "animate"
    at.sidebar.selectbox[0].set_value("quartic").run()
    assert at.query_params["toy"] == "quartic"


def test_pages_without_runs_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSBARCODE_RESULTS", str(tmp_path / "empty"))
    monkeypatch.setenv("LOSSBARCODE_DEMO_SWEEP", str(tmp_path / "missing.json"))
    monkeypatch.setenv("LOSSBARCODE_DEMO_RUNS", "")
    for page in ("explore", "scaling", "minima_map", "landscape_slice", "generalization",
                 "compare"):
        at = app(None if page == "explore" else page)
        assert not at.exception, page
        assert "No finished runs" in texts(at.info) or "No sweep" in texts(at.info), page


def test_app_start_and_toy_page_do_not_import_torch():
    code = (
        "import sys\n"
        "from streamlit.testing.v1 import AppTest\n"
        "for page in ('pages/toy_landscapes.py', 'pages/method.py'):\n"
        "    assert not AppTest.from_file(page, default_timeout=60).run().exception\n"
        "import pages._exports, pages._jobs, pages._notices, pages._pickers, pages._present\n"
        "import pages._runs, pages._streamlit_shim, pages._sweep_jobs, pages._sweeps\n"
        "import pages._views, pages._explore_state\n"
        "bad = [m for m in ('torch', 'umap') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


def test_every_page_opens_on_the_demo_run_until_there_are_runs(tmp_path, monkeypatch):
    from pages import _runs as ui

    monkeypatch.setenv("LOSSBARCODE_RESULTS", str(tmp_path / "empty"))
    monkeypatch.delenv("LOSSBARCODE_DEMO_RUNS", raising=False)
    demo_id = ExperimentConfig(width=ui.DEMO_WIDTHS[0]).run_id  # the narrow one opens
    at = app()
    assert not at.exception
    assert picker(at).value == demo_id
    assert "demo run" in texts(at.info) and ui.demo_command(ui.DEMO_WIDTHS[0]) in texts(at.info)
    assert "Start here" in texts(at.markdown)
    # barcode, diagram, profiles; the convergence chart is drawn once its expander is opened
    # (closed here: every path of the demo converged)
    assert len(charts(at)) == 3
    shipped = files_of(ui.DEMO_RUNS)
    for page in ("minima_map", "landscape_slice", "compare"):
        at = settle(app(page))
        assert not at.exception, page
        assert charts(at), page
    # A view other than the shipped defaults (3-D) is made in the private copy.
    settle(at.switch_page("pages/minima_map.py").run())
    settle(at.sidebar.radio[0].set_value("3").run())
    assert not at.exception and charts(at)[0]["data"][-1]["type"] == "scatter3d"
    assert not (tmp_path / "empty").exists()  # reading the demo writes nothing there
    assert files_of(ui.DEMO_RUNS) == shipped, "derived views went into assets/"


def files_of(folder: Path) -> dict[str, tuple[int, int]]:
    """``{relative path: (size, mtime_ns)}`` of every file under ``folder``."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


VIEW_STAGES = ("map-", "slice-")  # the stage names of views (lossbarcode.maps, .slices)


def forbid_computing_views(monkeypatch) -> None:
    """Computing a minima map or a plane slice fails from now on: only stored views show."""
    from lossbarcode import maps, slices

    def computed(*args, **kwargs):
        raise AssertionError("a view was computed instead of read from the store")

    monkeypatch.setattr(maps, "project", computed)
    monkeypatch.setattr(slices, "build_landscape", computed)


def test_first_open_of_the_view_pages_on_the_demo_runs_computes_nothing(tmp_path, monkeypatch):
    """The Minima map and the Landscape slice open on both shipped demo runs with their
    default settings from the views the demo ships: computing one would show an error."""
    from lossbarcode.slices import default_minima
    from pages import _runs as ui

    demo = tmp_path / "demo_runs"
    shutil.copytree(ui.DEMO_RUNS, demo)
    monkeypatch.setenv("LOSSBARCODE_RESULTS", str(tmp_path / "empty"))
    monkeypatch.setenv("LOSSBARCODE_DEMO_RUNS", str(demo))
    forbid_computing_views(monkeypatch)
    runs = ui._finished(ResultStore(demo))
    assert len(runs) == len(ui.DEMO_WIDTHS)
    for run_id in runs:
        r = load_result(ResultStore(demo), run_id)
        at = settle(app("minima_map", run=run_id))
        assert not at.exception and not at.error, texts(at.error)
        assert picker(at, "Run").value == run_id
        figure = charts(at)[0]
        assert "minima" in [t.get("name") for t in figure["data"]]
        about = texts(at.caption)
        assert "method: **UMAP**" in about and "shown while" not in about  # the final map
        assert ui.demo_views_command(run_id) in texts(at.info)
        at = settle(app("landscape_slice", run=run_id))
        assert not at.exception and not at.error, texts(at.error)
        assert at.sidebar.multiselect[0].value == list(default_minima(r.diverged))
        assert len(charts(at)) == 2
        # The computing guard works: another resolution than the shipped one is refused.
        settle(at.sidebar.select_slider[0].set_value(21).run())
        assert "a view was computed" in texts(at.error)


def test_the_shipped_demo_views_are_what_the_recorded_command_makes(tmp_path, monkeypatch,
                                                                     capsys):
    """Each demo run ships exactly its default views (lossbarcode.views.default_views),
    computed from its stored minima and paths; the recorded command, run on a copy without
    the deterministic ones (PCA map, slice), makes them again, and with them all present
    computes nothing."""
    from lossbarcode import maps, slices
    from lossbarcode.cli import main
    from lossbarcode.experiment import load_minima, load_paths
    from lossbarcode.views import default_views
    from pages import _runs as ui

    readme = " ".join((ROOT / "README.md").read_text().split())
    shipped = ResultStore(ui.DEMO_RUNS)
    copy = ResultStore(tmp_path / "demo_runs")
    shutil.copytree(shipped.root, copy.root)
    for run_id in shipped.list():
        assert f"`{ui.demo_views_command(run_id)}`" in readme  # recorded where anyone looks
        command = ui.demo_views_command(run_id).split()
        assert command[:3] == ["lossbarcode", "views", run_id]
        assert command[3:] == ["--results", "assets/demo_runs"]
        r = load_result(shipped, run_id)
        found, connected = load_minima(shipped, run_id), load_paths(shipped, run_id)
        wanted = default_views(r.diverged)
        assert [w.kind for w in wanted] == ["map", "map", "slice"]
        views = [s for s in shipped.stages(run_id) if s.startswith(VIEW_STAGES)]
        assert len(views) == len(wanted), views  # one per default view, nothing stale
        for stage in views:
            meta, arrays = shipped.load_stage(run_id, stage)
            if stage.startswith("map-"):
                assert shipped.stage_inputs(run_id, stage) == maps.INPUTS
                assert meta["dim"] == choices.MAP_DIM
                assert meta["requested"] in (choices.MAP_INTERIM, choices.MAP_METHOD)
                # made from the stored minima and paths
                np.testing.assert_array_equal(arrays["minima_loss"], found.train_loss)
                np.testing.assert_array_equal(arrays["pairs"].reshape(-1, 2), connected.pairs)
                assert meta["n_points"] == len(found.valid) + sum(
                    len(img) - 2 for img in connected.images)
            else:
                assert shipped.stage_inputs(run_id, stage) == slices.INPUTS
                want = wanted[-1].kwargs
                assert (tuple(meta["minima"]), meta["resolution"], meta["margin"]) == (
                    want["minima"], want["resolution"], want["margin"])
                np.testing.assert_allclose(arrays["point_loss"],
                                           found.train_loss[list(want["minima"])], rtol=1e-5)
        methods = {shipped.load_stage(run_id, s)[0].get("method") for s in views}
        assert "umap" in methods  # "auto" is UMAP for this many points (umap-learn installed)
        # Remake the deterministic views with the recorded command and compare.
        redo = [s for s in views if shipped.load_stage(run_id, s)[0].get("method") != "umap"]
        for stage in redo:
            copy.drop_stage(run_id, stage)
        argv = [*command[1:4], str(copy.root)]
        assert main(argv) == 0
        assert len(capsys.readouterr().out.strip().splitlines()) == len(wanted) + 1
        assert sorted(s for s in copy.stages(run_id) if s.startswith(VIEW_STAGES)) == sorted(
            views)
        for stage in redo:
            (meta, arrays), (meta2, arrays2) = (shipped.load_stage(run_id, stage),
                                                copy.load_stage(run_id, stage))
            assert meta.keys() == meta2.keys() and arrays.keys() == arrays2.keys()
            for name in arrays:
                np.testing.assert_allclose(arrays2[name], arrays[name], rtol=1e-4, atol=1e-7,
                                           err_msg=f"{run_id}/{stage}/{name}")
    with monkeypatch.context() as m:  # every default view is stored: nothing is computed
        forbid_computing_views(m)
        for run_id in shipped.list():
            assert main(["views", run_id, "--results", str(copy.root)]) == 0


def test_the_shipped_demo_run_is_the_current_default():
    from lossbarcode.experiment import load_result
    from pages import _runs as ui

    demo = ResultStore(ui.DEMO_RUNS)
    wanted = {ExperimentConfig(width=w).run_id: w for w in ui.DEMO_WIDTHS}
    assert ExperimentConfig(width=ui.DEMO_WIDTHS[-1]) == ExperimentConfig()
    assert set(demo.list()) == set(wanted), (
        "the default config or the path algorithm changed: regenerate the demo runs with "
        + " and ".join(f"`{ui.demo_command(w)}`" for w in ui.DEMO_WIDTHS)
        + " (and delete the old folders), then their views with "
        + " and ".join(f"`{ui.demo_views_command(ExperimentConfig(width=w).run_id)}`"
                       for w in ui.DEMO_WIDTHS))
    for run_id, width in wanted.items():
        r = load_result(demo, run_id)
        assert r.config.identity() == ExperimentConfig(width=width).identity()
        # The narrow one is there for its visible, certified bars: say so or fail.
        if width != choices.WIDTH:
            certified, _ = r.bar_certificates()
            lengths = (r.barcode.deaths - r.barcode.births)[np.isfinite(r.barcode.deaths)]
            assert certified.all() and lengths.min() > 2 * r.config.path_atol


def diverge(run, i: int):
    """``run`` with minimum ``i`` marked diverged and what derives from that recomputed (not
    certified, no bar), so the result verifies on load."""
    import dataclasses

    from lossbarcode.experiment import _valid_barcode, all_scores

    diverged = run.diverged.copy()
    diverged[i] = True
    certified = run.minima_certified & ~diverged
    barcodes = [_valid_barcode(run.train_loss, diverged, run.barrier_matrix, run.config.rule,
                               births) for births in (certified[~diverged], None)]
    return dataclasses.replace(run, diverged=diverged, minima_certified=certified,
                               barcode=barcodes[0], scores=all_scores(barcodes[0]),
                               barcode_all=barcodes[1], scores_all=all_scores(barcodes[1]))


def test_health_banner_on_a_broken_run(store, tmp_path, monkeypatch):
    from lossbarcode.experiment import save_result

    run = store["runs"][0]
    broken = diverge(run, 1)
    results = ResultStore(tmp_path)
    with results.lock(broken.run_id):
        save_result(results, broken)
    monkeypatch.setenv("LOSSBARCODE_RESULTS", str(tmp_path))
    for page in (None, "minima_map", "landscape_slice", "compare"):
        at = app(page, run=broken.run_id)
        assert not at.exception, page
        assert "broken" in texts(at.error).lower(), page
    at = app(run=broken.run_id)
    assert "diverged" in texts(at.error) and "broken" in picker(at).format_func(
        broken.run_id)


def test_explore_checks_the_config_in_the_sidebar_before_run(store):
    at = settle(app(preset="tiny"))
    at.sidebar.selectbox(key="cfg_dataset").set_value("mnist").run()
    assert not at.exception
    error = texts(at.sidebar.error)
    assert "mnist is not under" in error and "train-images-idx3-ubyte" in error
    assert at.sidebar.button(key="run_experiment").disabled
    at.sidebar.selectbox(key="cfg_dataset").set_value("digits").run()
    at.sidebar.number_input(key="cfg_k").set_value(1).run()  # out of range: said, not clamped
    assert "k must be an integer >= 2" in texts(at.sidebar.error)
    assert at.sidebar.button(key="run_experiment").disabled


def test_explore_offers_the_real_datasets_and_says_how_to_get_a_missing_one(
        store, tmp_path, monkeypatch):
    from fake_data import fake_debian_fashion

    from lossbarcode import datafiles

    copy = fake_debian_fashion(tmp_path, monkeypatch)
    at = settle(app(preset="tiny"))
    dataset = at.sidebar.selectbox(key="cfg_dataset")
    assert {"fashion_mnist", "mnist1d"} <= set(dataset.options)  # picked, never typed
    dataset.set_value("fashion_mnist").run()
    at = settle(at)
    assert not at.exception and not texts(at.sidebar.error)
    assert f"Read from {copy}, installed by Debian's package dataset-fashion-mnist" in texts(
        at.sidebar.caption)
    at.sidebar.selectbox(key="cfg_dataset").set_value("mnist1d").run()
    at = settle(at)
    assert not texts(at.sidebar.error) and "make_dataset" in texts(at.sidebar.caption)
    # Neither installed: the picker marks them, and picking one says how to get it.
    at.sidebar.selectbox(key="cfg_dataset").set_value("digits").run()
    monkeypatch.setitem(datafiles.SYSTEM_COPIES, "fashion_mnist",
                        (tmp_path / "not-installed", "dataset-fashion-mnist"))
    monkeypatch.setattr(datafiles, "MNIST1D_PACKAGE", "mnist1d_is_not_installed")
    at.run()
    options = at.sidebar.selectbox(key="cfg_dataset").options
    assert {"mnist1d (not installed)", "fashion_mnist (not installed)", "digits"} <= set(options)
    at.sidebar.selectbox(key="cfg_dataset").set_value("mnist1d").run()
    assert "pip install mnist1d" in texts(at.sidebar.error)
    assert at.sidebar.button(key="run_experiment").disabled
    at.sidebar.selectbox(key="cfg_dataset").set_value("fashion_mnist").run()
    assert "apt-get install dataset-fashion-mnist" in texts(at.sidebar.error)


def test_explore_preset_turns_custom_when_edited_and_blanks_mean_default(store):
    at = settle(app())
    assert at.sidebar.selectbox(key="preset").value == "default"
    assert at.sidebar.number_input(key="cfg_n_train").value is None  # "all"
    assert at.sidebar.number_input(key="cfg_lr").value is None  # the optimizer's default
    at.sidebar.number_input(key="cfg_width").set_value(64).run()
    assert at.sidebar.selectbox(key="preset").value == "custom"
    at.sidebar.selectbox(key="preset").set_value("wide").run()
    assert at.sidebar.number_input(key="cfg_width").value == 128
    assert at.sidebar.selectbox(key="preset").value == "wide"


def test_explore_settings_all_have_help():
    """Every config field the dashboard offers has a sidebar widget made by setting(), which
    gives it the field's key and help; the only other sidebar setting (the preset) has help."""
    import ast

    from lossbarcode.config import ExperimentConfig

    source = (ROOT / "pages" / "explore.py").read_text()
    calls = [node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call)]
    fields = {c.args[2].value for c in calls if getattr(c.func, "id", "") == "setting"}
    cli_only = {"dtype", "eval_points", "eval_subset", "path_lr"}  # CLI and config files only
    assert fields == set(ExperimentConfig().to_dict()) - cli_only
    preset = [c for c in calls if any(k.arg == "key" and getattr(k.value, "value", "") ==
                                      "preset" for k in c.keywords)]
    assert preset and any(k.arg == "help" for k in preset[0].keywords)


def test_a_settings_help_is_the_config_fields_description():
    from lossbarcode.experiment import FIELD_HELP
    from pages._explore_state import help_for

    assert help_for("width").startswith(FIELD_HELP["width"][0].upper() + FIELD_HELP["width"][1:])
    assert "(default 32)" in help_for("width")
    assert help_for("lr", empty=True).startswith("Learning rate (empty: the family's")
    assert help_for("steps", empty=True).startswith("Minibatch training steps per network "
                                                    "(empty: the family's")


def test_minima_map_warns_about_an_unknown_run_link(store):
    at = app("minima_map")
    at.query_params["run"] = "0123456789abcdef"
    at.run()
    assert not at.exception
    assert "0123456789abcdef` is not in the results folder" in texts(at.warning)
    shown = picker(at, "Run").value
    assert at.query_params["run"] == shown  # the URL names what is shown
    settle(at.run())  # reruns (e.g. when the map is ready) keep saying so
    assert "0123456789abcdef` is not in the results folder" in texts(at.warning)
    other = next(r.run_id for r in store["runs"] if r.run_id != shown)
    picker(at, "Run").set_value(other).run()
    assert picker(at, "Run").value == other and at.query_params["run"] == other
    assert "not in the results folder" not in texts(at.warning)


def test_generalization_leaves_broken_runs_out_unless_included(store, tmp_path, monkeypatch):
    from lossbarcode.experiment import save_result

    good, other = store["runs"]
    results = ResultStore(tmp_path)
    for r in (good, diverge(other, 0)):
        with results.lock(r.run_id):
            save_result(results, r)
    monkeypatch.setenv("LOSSBARCODE_RESULTS", str(tmp_path))
    at = app("generalization")
    at.sidebar.multiselect(key="gen_runs").set_value([good.run_id, other.run_id]).run()
    assert not at.exception
    assert "broken" in texts(at.warning) and "left out" in texts(at.warning)
    assert len(at.dataframe[0].value) == 1  # one run in the per-run table
    at.sidebar.toggle[0].set_value(True).run()
    assert "pooled anyway" in texts(at.warning)
    assert len(at.dataframe[0].value) == 2
    at.sidebar.radio[0].set_value("test loss").run()
    # A shared link reopens what is on screen: the runs, the switch and the measure.
    assert at.query_params["broken"] == "1" and at.query_params["measure"] == "test loss"
    shared = app("generalization", runs=[good.run_id, other.run_id], broken="1",
                 measure="test loss")
    assert not at.exception and not shared.exception
    assert shared.sidebar.toggle[0].value is True
    assert shared.sidebar.radio[0].value == "test loss"
    assert len(shared.dataframe[0].value) == 2


def test_reproduction_page_shows_a_reports_verdicts_and_what_is_missing(tmp_path, monkeypatch):
    from lossbarcode import reproduce

    monkeypatch.setenv("LOSSBARCODE_REPORTS", str(tmp_path / "reports"))
    settings = reproduce.plan("tiny", ["fcn"], ["digits"])
    report = reproduce.measure(settings, ResultStore(tmp_path / "none"), "tiny",
                               "lossbarcode reproduce --scale tiny")
    reproduce.write_report(report, tmp_path / "reports" / "mine")
    at = app("reproduction", report="mine")
    assert not at.exception
    assert at.selectbox[0].value == "mine"
    assert set(at.dataframe[0].value["verdict"]) == {"missing runs"}
    assert "runs not computed yet" in texts(at.markdown)


def test_a_link_to_a_demo_run_still_opens_once_there_are_runs_of_ones_own(store, monkeypatch):
    from pages import _runs as ui

    monkeypatch.delenv("LOSSBARCODE_DEMO_RUNS", raising=False)
    demo_id = ui._finished(ResultStore(ui.DEMO_RUNS))[0]
    at = app(run=demo_id)  # the results folder has its own runs
    assert not at.exception
    assert picker(at).value == demo_id
    assert "not in the results folder" not in texts(at.warning)


def test_compare_and_generalization_name_the_listed_runs_they_left_out(store, tmp_path,
                                                                        monkeypatch):
    """A listed run that cannot be loaded (here: a forged TO-score) is named, never a crash."""
    import shutil

    from lossbarcode import store as store_mod

    good = store["runs"][0].run_id
    root = tmp_path / "results"
    shutil.copytree(store["root"] / good, root / good)
    bad = "f" * 16
    shutil.copytree(root / good, root / bad)
    path = root / bad / "result.json"
    record = json.loads(path.read_text())
    record["run_id"] = record["meta"]["run_id"] = bad
    record["meta"]["to_score"]["l2"] = 99.0
    record["sha256"] = store_mod._record_digest(record)
    path.write_text(json.dumps(record))
    monkeypatch.setenv("LOSSBARCODE_RESULTS", str(root))
    at = app("compare", run=good, run2=bad)
    assert not at.exception
    assert bad in texts(at.warning) and "unusable" in texts(at.warning)
    at = app("generalization")
    at.sidebar.multiselect(key="gen_runs").set_value([good, bad]).run()
    assert not at.exception
    assert bad in texts(at.warning) and "unusable" in texts(at.warning)


def test_explore_shows_before_and_after_rebasin_when_both_runs_exist(tmp_path, monkeypatch):
    results = ResultStore(tmp_path / "results")
    before = run_experiment(TINY, results)
    monkeypatch.setenv("LOSSBARCODE_RESULTS", str(results.root))
    at = settle(app(run=before.run_id))
    assert not at.exception and "re-basin" not in " ".join(e.label for e in at.expander)
    shown = len(charts(at))
    after = run_experiment(TINY.replace(align=True), results)
    at = settle(app(run=after.run_id))
    assert not at.exception
    assert "Before and after re-basin" in " ".join(e.label for e in at.expander)
    table = next(d.value for d in at.dataframe if "measure" in d.value.columns)
    assert list(table.columns) == ["measure", "unaligned", "aligned"]
    assert table.iloc[0].tolist() == ["run_id", before.run_id, after.run_id]
    titles = [f["layout"]["title"]["text"] for f in charts(at)]
    assert len(titles) == shown + 2
    assert any(t.startswith("Unaligned") for t in titles)
    assert any(t.startswith("Aligned (re-basin)") for t in titles)


def test_reproduction_page_opens_the_shipped_report_with_its_curves(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSBARCODE_REPORTS", str(tmp_path / "none"))
    at = app("reproduction")
    assert not at.exception
    assert at.selectbox[0].value.startswith("shipped: ")
    table = at.dataframe[0].value
    assert set(table["claim"]) == {"width", "depth", "generalization"}
    assert len(charts(at)) == 2  # TO-score vs width and vs depth, with their bands


def test_demo_runs_are_copied_safely_and_cleaned_up_at_exit(tmp_path):
    """A dashboard process copies the demo runs' regular files only (a FIFO, a link to
    /dev/zero and a linked run folder are left behind, without hanging), serves the good run
    from the copy, removes its copy when it exits, and removes the copies of processes that
    are gone (not those of live ones)."""
    import os
    import shutil
    import subprocess
    import sys

    demo, temp = tmp_path / "demo", tmp_path / "tmp"
    temp.mkdir()
    good = next(p for p in (ROOT / "assets" / "demo_runs").iterdir() if p.is_dir())
    shutil.copytree(good, demo / good.name)
    for name, make in (("a" * 16, os.mkfifo), ("b" * 16, lambda p: p.symlink_to("/dev/zero"))):
        (demo / name).mkdir()
        make(demo / name / "result.json")
    (demo / ("c" * 16)).symlink_to(demo / good.name, target_is_directory=True)
    dead = temp / "lossbarcode-demo-999999999-old"  # no such process: a leftover
    live = temp / f"lossbarcode-demo-{os.getpid()}-mine"  # this process: kept
    dead.mkdir()
    live.mkdir()
    script = ("from pages import _runs\n"
              "s = _runs.demo_store()\n"
              "print(s.root)\n"
              "print(','.join(sorted(p.name for p in s.root.iterdir())))\n"
              "print(','.join(_runs._finished(s)))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(temp),
           "LOSSBARCODE_DEMO_RUNS": str(demo), "LOSSBARCODE_RESULTS": str(tmp_path / "r")}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    root, names, finished = done.stdout.strip().splitlines()[-3:]
    assert Path(root).is_relative_to(temp)
    assert good.name in names.split(",") and "c" * 16 not in names.split(",")
    assert finished == good.name  # the good run is served; the FIFO and link are not copied
    assert not Path(root).exists() and not Path(root).parent.exists()  # removed at exit
    assert not dead.exists() and live.exists()
    assert [p.name for p in temp.iterdir()] == [live.name]
    assert (demo / ("a" * 16) / "result.json").is_fifo()  # the source is left as it was
