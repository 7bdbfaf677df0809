"""The dashboard: AppTest of the toy page and of the entry point (the other pages are in
tests/test_pages.py, the real-browser tests in tests/test_browser.py)."""

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lossbarcode import grid_barcode, toys

ROOT = Path(__file__).resolve().parents[1]


def toy_page() -> AppTest:
    return AppTest.from_file(str(ROOT / "pages" / "toy_landscapes.py"), default_timeout=60)


def test_toy_page_renders_every_function_and_moves_the_slider():
    at = toy_page().run()
    assert not at.exception
    for name in ["quartic", "three_hump_camel", "six_hump_camel", "himmelblau", "rastrigin"]:
        at.sidebar.selectbox[0].set_value(name).run()
        assert not at.exception, name
        assert len(at.get("plotly_chart")) == 4, name
        # Every animation frame: bars alive at its level (from the barcode) == components
        # drawn (from the sweep's labelling), all merged at the top.
        barcode = grid_barcode(toys.get(name).grid(201)[1])
        frames = json.loads(at.get("plotly_chart")[0].proto.spec)["frames"]
        counts = []
        for frame in frames:
            level = frame["layout"]["meta"]
            alive = int(((barcode.births <= level) & (barcode.deaths > level)).sum())
            assert f": {alive} component" in frame["layout"]["title"]["text"], (name, level)
            counts.append(alive)
        assert counts[0] >= 1 and counts[-1] == 1, (name, counts)
        if name == "rastrigin":
            assert max(counts) > 1
        for fraction in (0.0, 0.3, 0.99):  # the static views' level
            slider = at.slider[0]
            at.slider[0].set_value(slider.min + fraction * (slider.max - slider.min)).run()
            assert not at.exception, name
            level = at.slider[0].value
            alive = int(((barcode.births <= level) & (barcode.deaths > level)).sum())
            assert int(at.metric[3].value) == alive, name


def test_toy_page_filter_and_surface_view():
    at = toy_page().run()
    at.sidebar.selectbox[0].set_value("rastrigin").run()
    all_bars = int(at.metric[0].value)
    at.sidebar.number_input[0].set_value(16.5).run()  # median length ~16.3
    assert not at.exception
    assert 1 <= int(at.metric[0].value) < all_bars
    at.sidebar.radio[1].set_value("surface").run()
    at.sidebar.radio[0].set_value("axis").run()
    assert not at.exception and len(at.get("plotly_chart")) == 4


def test_app_entry_point_opens_explore_and_navigates_to_the_toy_page(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSBARCODE_RESULTS", str(tmp_path))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "Explore a run"
    at.switch_page("pages/toy_landscapes.py").run()
    assert not at.exception
    assert at.title[0].value == "Toy landscapes"


def test_a_pages_first_run_waits_for_another_first_run_and_later_runs_do_not():
    import threading

    from pages import _warmup

    order: list[str] = []
    inside = threading.Event()
    release = threading.Event()

    def first(page: str) -> None:
        with _warmup.first_run_alone(page):
            inside.set()
            release.wait(5)
            order.append(f"{page} done")

    def second(page: str) -> None:
        with _warmup.first_run_alone(page):
            order.append(f"{page} ran")

    a = threading.Thread(target=first, args=("warm-a",))
    a.start()
    inside.wait(5)
    b = threading.Thread(target=second, args=("warm-b",))
    b.start()
    b.join(0.3)
    assert b.is_alive() and order == []  # a first run waits for the other first run
    release.set()
    a.join(5)
    b.join(5)
    assert order == ["warm-a done", "warm-b ran"]
    # A page that has run once (however it ended) no longer waits, even while the lock is held.
    with pytest.raises(RuntimeError):
        with _warmup.first_run_alone("warm-c"):
            raise RuntimeError("the page failed")
    with _warmup._LOCK:  # held: a first run would deadlock here
        for page in ("warm-a", "warm-c"):
            with _warmup.first_run_alone(page):
                order.append(f"{page} again")
    assert order[-2:] == ["warm-a again", "warm-c again"]
