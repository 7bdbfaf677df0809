"""Real-browser tests: headless Chromium (Playwright) against ``streamlit run app.py``.

One test runs a small experiment from the Explore page, clicks its barcode and visits every
page (screenshots in test-artifacts/, light and dark theme); one opens a shared link to a
page as the very first request of a fresh server.
"""

import json
import re
import time
from pathlib import Path

import pytest

from lossbarcode.bench.browser import CHROMIUM, launch_browser, serve_app, wait_ready

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
DEMO = ROOT / "assets" / "demo_sweep.json"
# (navigation label, page title, charts drawn when ready, screenshot name)
PAGES = [
    ("Scaling", "Scaling", 3, "scaling"),
    ("Minima map", "Minima map", 1, "minima_map"),
    ("Landscape slice", "Landscape slice", 2, "landscape_slice"),
    ("Generalization", "Segment length vs generalization", 1, "generalization"),
    ("Compare", "Compare two runs", 4, "compare"),
    ("Toy landscapes", "Toy landscapes", 4, "toy_landscapes"),
    ("Method", "Method", 1, "method"),
    ("Explore", "Explore a run", 3, "explore_reopened"),
]

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def playwright_api():
    """Playwright and Debian's Chromium are here (browsers start with bench.browser's
    launch_browser, as the benchmarks' do)."""
    api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: install Debian's chromium (see .ci/run)")
    ARTIFACTS.mkdir(exist_ok=True)
    return api


@pytest.fixture(scope="module")
def app_env(tmp_path_factory):
    """An empty results folder, and the shipped demo sweep (or a small stand-in)."""
    folder = tmp_path_factory.mktemp("browser")
    demo = DEMO
    if not demo.exists():
        demo = folder / "demo_sweep.json"
        records = [{"run_id": f"demo{w}{s}", "dataset": "digits", "arch": "fcn", "width": w,
                    "depth": d, "seed": s, "k": 4, "n_params": 100 * w, "to_score": 1 / w + s / 50,
                    "score_variant": "l2", "train_loss": 0.1, "test_error": 0.2,
                    "n_diverged": 0} for w in (4, 8, 16) for d in (1, 2) for s in (0, 1)]
        bars = {"births": [0.1, 0.2], "deaths": ["inf", 0.3], "minima": [0, 1],
                "saddles": [-1, 1], "merged_into": [-1, 0]}
        demo.write_text(json.dumps({"command": "lossbarcode sweep --widths 4,8,16",
                                    "description": "stand-in demo sweep",
                                    "score_variant": "l2", "records": records,
                                    "barcodes": {r["run_id"]: bars for r in records}}))
    return {"LOSSBARCODE_RESULTS": str(folder / "results"), "LOSSBARCODE_DEMO_SWEEP": str(demo)}


def no_exception(page, where: str) -> None:
    errors = page.locator('[data-testid="stException"]')
    assert errors.count() == 0, f"{where}: {errors.first.inner_text()[:500]}"


def screenshot(page, name: str) -> None:
    """The whole page: Streamlit scrolls inside its main block, so grow the viewport first."""
    height = page.evaluate(
        "Math.max(...[...document.querySelectorAll('[data-testid=stMain], "
        "[data-testid=stMainBlockContainer]')].map(e => e.scrollHeight), 900)")
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": min(int(height) + 80, 5000)})
    page.wait_for_timeout(600)  # charts re-layout to the new size
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
    page.set_viewport_size(size)


def url_run(page) -> str | None:
    return page.evaluate("new URLSearchParams(location.search).get('run')")


def shown_run(page) -> str | None:
    """The run id of the result on screen: the caption under the metrics starts with it."""
    found = re.search(r"\b([0-9a-f]{16}) · ", page.locator('[data-testid="stMain"]').inner_text())
    return found.group(1) if found else None


def start_long_run(page) -> None:
    """On Explore: start a run of 2,000,000 steps (long enough to cancel), confirming it (a
    long run asks first)."""
    page.get_by_text("Minima", exact=True).first.click()  # open the Minima expander
    steps = page.get_by_label("Steps", exact=True)
    steps.fill("2000000")
    steps.press("Enter")
    page.wait_for_timeout(800)
    page.get_by_role("button", name="Run experiment").click()
    page.get_by_role("button", name=re.compile("^Confirm: start")).click(timeout=60_000)


def wait_new_run_shown(page, old: list[str], timeout_s: float = 180) -> None:
    """Wait until a run finished: the URL names a run not in ``old``, its caption is on screen
    and no job is running. (The URL names a job from its start, while the previous run is still
    shown under the progress box: waiting on the URL alone races the first rerun.)"""
    page.wait_for_function(
        "(() => { const r = new URLSearchParams(location.search).get('run');"
        f" return r && !{json.dumps(old)}.includes(r)"
        " && document.body.innerText.includes(r + ' · ')"
        " && !document.body.innerText.includes('Running experiment'); })()",
        timeout=timeout_s * 1000)


def test_run_an_experiment_click_a_bar_and_visit_every_page(playwright_api, app_env):
    with serve_app(app_env) as (url, _), launch_browser() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/?preset=tiny", wait_until="domcontentloaded")
        wait_ready(page, "Explore a run", charts=3, timeout=120)  # the demo run
        demo_id = url_run(page)
        page.get_by_role("button", name="Run experiment").click()
        wait_new_run_shown(page, [demo_id])
        wait_ready(page, "Explore a run", charts=3, timeout=180)
        no_exception(page, "explore")
        run_id = url_run(page)
        assert run_id and len(run_id) == 16 and run_id != demo_id
        assert shown_run(page) == run_id

        # Click the barcode's first bar (the lowest minimum: the essential bar, drawn wide).
        barcode = page.locator(".js-plotly-plot").first
        barcode.locator("g.trace.bars path").first.click(force=True)
        page.wait_for_function(
            "document.body.innerText.includes('segment never ends')", timeout=30_000)
        assert "minimum=" in page.url
        wait_ready(page, "Explore a run", charts=3)
        screenshot(page, "explore")

        for label, title, charts, name in PAGES:
            page.locator('[data-testid="stSidebarNav"] a', has_text=label).first.click()
            wait_ready(page, title, charts, timeout=120)
            no_exception(page, label)
            screenshot(page, name)

        dark = browser.new_page(viewport={"width": 1400, "height": 1000}, color_scheme="dark")
        for path, title, charts in (("", "Explore a run", 3), ("scaling", "Scaling", 3)):
            dark.goto(f"{url}/{path}?run={run_id}", wait_until="domcontentloaded")
            wait_ready(dark, title, charts, timeout=60)
            no_exception(dark, f"{path} (dark)")
            assert "Page not found" not in dark.content()
            screenshot(dark, f"{path or 'explore'}_dark")


def test_a_shared_link_is_the_first_request_of_a_fresh_server(playwright_api, app_env):
    """Regression: before the first st.navigation call Streamlit would run a page of the
    pages/ folder alone (no app navigation); the pages reroute through app.py."""
    with serve_app(app_env) as (url, _), launch_browser() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/toy_landscapes?toy=himmelblau", wait_until="domcontentloaded")
        wait_ready(page, "Toy landscapes", charts=4)
        nav = page.locator('[data-testid="stSidebarNav"]').inner_text()
        assert "Experiments" in nav and "Minima map" in nav and "common" not in nav
        assert "toy=himmelblau" in page.url
        titles = page.locator(".js-plotly-plot .gtitle").all_text_contents()
        assert "Himmelblau" in titles
        no_exception(page, "toy page")


def test_first_open_shows_the_demo_run_and_where_to_start(playwright_api, app_env, tmp_path):
    env = {**app_env, "LOSSBARCODE_RESULTS": str(tmp_path / "results")}  # no runs of its own
    with serve_app(env) as (url, _), launch_browser() as browser:
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(url, wait_until="domcontentloaded")
        wait_ready(page, "Explore a run", charts=3, timeout=120)
        text = page.locator('[data-testid="stMain"]').inner_text()
        assert "demo run" in text and "Start here" in text
        assert url_run(page) == shown_run(page) and url_run(page) is not None
        no_exception(page, "first open")
        page.get_by_text("Convergence of the paths").click()  # drawn when opened
        wait_ready(page, "Explore a run", charts=4, timeout=60)
        page.get_by_role("link", name="3 · The scaling curve").click()
        wait_ready(page, "Scaling", charts=2, timeout=60)
        no_exception(page, "scaling from start here")


def test_the_url_names_the_shown_run_after_a_fast_run_and_after_cancel(playwright_api,
                                                                         tmp_path):
    env = {"LOSSBARCODE_RESULTS": str(tmp_path / "results"), "LOSSBARCODE_DEMO_RUNS": ""}
    with serve_app(env) as (url, _), launch_browser() as browser:
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.add_init_script("""window.__urls = [];  // the URL changes, for a failure's message
for (const name of ['pushState', 'replaceState']) {
  const orig = history[name].bind(history);
  history[name] = (s, t, u) => { window.__urls.push([performance.now()|0, name, String(u)]);
                                 return orig(s, t, u); };
}""")
        page.goto(f"{url}/?preset=tiny", wait_until="domcontentloaded")
        page.wait_for_function("document.body.innerText.includes('No finished runs')",
                               timeout=60_000)
        shown = []
        for seed in (1, 2):  # a fast run, then another one while a result is shown
            seed_box = page.get_by_label("Seed", exact=True)
            if not seed_box.is_visible():
                page.get_by_text("Run", exact=True).last.click()  # open the Run expander
            seed_box.fill(str(seed))
            seed_box.press("Enter")
            page.wait_for_timeout(800)
            page.get_by_role("button", name="Run experiment").click()
            wait_new_run_shown(page, shown)
            wait_ready(page, "Explore a run", charts=3, timeout=60)
            if url_run(page) != shown_run(page):
                screenshot(page, "url_mismatch")
                print("MISMATCH", shown, url_run(page), shown_run(page))
                for entry in page.evaluate("window.__urls"):
                    print("URL", entry)
                print(page.locator('[data-testid="stMain"]').inner_text()[:1500])
            assert url_run(page) == shown_run(page), "the URL and the shown run differ"
            shown.append(url_run(page))
            page.reload(wait_until="domcontentloaded")  # a reload opens the same run
            wait_ready(page, "Explore a run", charts=3, timeout=60)
            assert shown_run(page) == shown[-1]

        start_long_run(page)
        page.get_by_role("button", name="Cancel").click(timeout=60_000)
        page.wait_for_function("document.body.innerText.includes('was cancelled')",
                               timeout=60_000)
        wait_ready(page, "Explore a run", charts=3, timeout=60)
        text = page.locator('[data-testid="stMain"]').inner_text()
        assert "not in the results folder" not in text
        assert url_run(page) == shown_run(page) == shown[-1], "after cancel: the open run"
        no_exception(page, "after cancel")


def test_presentation_mode_stacks_charts_in_large_type(playwright_api, app_env):
    with serve_app(app_env) as (url, _), launch_browser() as browser:
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(url, wait_until="domcontentloaded")
        wait_ready(page, "Explore a run", charts=3, timeout=120)
        sizes_js = ("['h1', '[data-testid=stMetricValue]'].map(s => parseFloat("
                    "getComputedStyle(document.querySelector(s)).fontSize))")
        before = page.evaluate(sizes_js)
        page.get_by_role("button", name="Presentation mode").click()
        page.get_by_role("button", name="Exit presentation mode").wait_for(timeout=30_000)
        wait_ready(page, "Explore a run", charts=3, timeout=60)
        page.wait_for_function("location.search.includes('present=1')", timeout=10_000)
        # The sidebar's settings are hidden by the mode's style, which may land a moment after
        # the Exit button: wait for it (a sidebar that stays visible fails here).
        page.get_by_role("button", name="Run experiment").wait_for(state="hidden",
                                                                    timeout=10_000)
        after = page.evaluate(sizes_js)
        assert all(a >= 1.2 * b for a, b in zip(after, before, strict=True)), (before, after)
        boxes = [page.locator(".js-plotly-plot").nth(i).bounding_box() for i in range(2)]
        assert boxes[1]["y"] >= boxes[0]["y"] + boxes[0]["height"] - 1, "charts not stacked"
        fonts = page.evaluate("[...document.querySelectorAll('.js-plotly-plot .gtitle')]"
                              ".map(t => parseFloat(t.style.fontSize))")
        assert fonts and min(fonts) >= 20
        screenshot(page, "presentation")
        page.locator('[data-testid="stSidebarNav"] a', has_text="Scaling").first.click()
        wait_ready(page, "Scaling", charts=2, timeout=60)
        # the mode survives a page switch
        page.wait_for_function("location.search.includes('present=1')", timeout=10_000)
        # Scaling's charts in type for the back of a room, as drawn (the chart theme's own
        # 12 px axis fonts must not win): ticks >= 18 px, titles >= 22 px.
        drawn = page.evaluate(
            "(() => { const size = s => [...document.querySelectorAll(s)].map("
            "t => parseFloat(getComputedStyle(t).fontSize));"
            " return {ticks: size('.js-plotly-plot .xtick text, .js-plotly-plot .ytick text'),"
            " titles: size('.js-plotly-plot .gtitle')}; })()")
        assert drawn["ticks"] and min(drawn["ticks"]) >= 18, drawn
        assert drawn["titles"] and min(drawn["titles"]) >= 22, drawn
        screenshot(page, "presentation_scaling")
        page.get_by_role("button", name="Exit presentation mode").click()
        page.get_by_role("button", name="Presentation mode").wait_for(timeout=30_000)
        page.wait_for_function("!location.search.includes('present=1')", timeout=10_000)


def test_toy_animation_moves_in_the_browser_without_the_server(playwright_api, app_env):
    """The in-figure slider's frames are drawn by plotly.js alone: the level changes and the
    page sends the server nothing meanwhile."""
    from lossbarcode.bench.toy import FIND_FIGURE_JS, animate_every_frame, open_toy_page

    with serve_app(app_env) as (url, _), launch_browser() as browser:
        sent: list[str] = []
        page = open_toy_page(browser, url, "six_hump_camel", sent)
        assert sent, "the page talks to the server over the websocket that is watched"
        # The slider's first label is its current value ("level c = ..."), then the ticks.
        shown = ("() => { const gd = (" + FIND_FIGURE_JS + ")(); return "
                 "[gd.layout.meta, gd.querySelector('.slider-label').textContent]; }")
        start, first = page.evaluate(shown)
        run = animate_every_frame(page, sent)
        assert run["frames"] > 1 and len(run["times_ms"]) == run["frames"]
        level, last = page.evaluate(shown)
        assert level == run["level"] != start  # the last frame's level is shown
        assert first.startswith("level c = ") and last != first
        assert run["messages_sent"] == 0
        no_exception(page, "toy animation")


def test_sessions_opening_a_page_together_on_a_fresh_server_all_get_it(playwright_api):
    """Issue 19: five sessions opening Scaling at once on a fresh server saw an import race
    ("partially initialized module 'pandas'"); first runs of a page now run one at a time."""
    from lossbarcode.bench.load import load_benchmark, print_load_benchmark

    (row,) = load_benchmark(sessions=3, rounds=1, page="scaling")
    print_load_benchmark([row])
    assert row["errors"] == 0, row["error"]
    assert row["not_ready"] == 0 and row["max_s"] is not None


def test_pages_render_within_two_seconds_while_a_job_trains(playwright_api, tmp_path):
    """Issue 20 §5: with a job training (in its worker process, at a lower priority), a page
    the session has seen renders within 2 s; the job is still running afterwards."""
    env = {"LOSSBARCODE_RESULTS": str(tmp_path / "results")}
    with serve_app(env) as (url, _), launch_browser() as browser:
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(f"{url}/?preset=tiny", wait_until="domcontentloaded")
        wait_ready(page, "Explore a run", charts=3, timeout=120)
        start_long_run(page)
        page.get_by_role("button", name="Cancel").wait_for(timeout=60_000)
        page.wait_for_timeout(3000)  # the worker has started and trains
        visits = (("Method", "Method", 0), ("Scaling", "Scaling", 2))
        for label, title, charts in visits:  # first visits: caches filled
            page.locator('[data-testid="stSidebarNav"] a', has_text=label).first.click()
            wait_ready(page, title, charts, timeout=60)
        for label, title, charts in visits:
            start = time.perf_counter()
            page.locator('[data-testid="stSidebarNav"] a', has_text=label).first.click()
            wait_ready(page, title, charts, timeout=60)
            seconds = time.perf_counter() - start
            print(f"{label} while a job trains: {seconds:.2f} s")
            assert seconds <= 2.0, f"{label} took {seconds:.1f} s while a job trains"
            no_exception(page, label)
        page.locator('[data-testid="stSidebarNav"] a', has_text="Explore").first.click()
        cancel = page.get_by_role("button", name="Cancel")
        cancel.wait_for(timeout=60_000)  # still training: its progress offers Cancel
        cancel.click()
