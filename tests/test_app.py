"""The dashboard: AppTest for every page script, one real-browser smoke test."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("LOSSBARCODE_CHROMIUM", "/usr/bin/chromium")


def toy_page() -> AppTest:
    return AppTest.from_file(str(ROOT / "pages" / "toy_landscapes.py"), default_timeout=60)


def test_toy_page_renders_every_function_and_moves_the_slider():
    at = toy_page().run()
    assert not at.exception
    for name in ["quartic", "three_hump_camel", "six_hump_camel", "himmelblau", "rastrigin"]:
        at.sidebar.selectbox[0].set_value(name).run()
        assert not at.exception, name
        assert len(at.get("plotly_chart")) == 4, name
        counts = []
        for fraction in (0.0, 0.3, 0.99):
            slider = at.slider[0]
            at.slider[0].set_value(slider.min + fraction * (slider.max - slider.min)).run()
            assert not at.exception, name
            # bars alive at c (from the barcode) == components drawn (from image labelling)
            alive = int(at.metric[1].value)
            title = json.loads(at.get("plotly_chart")[1].proto.spec)["layout"]["title"]["text"]
            assert f": {alive} component" in title, (name, title)
            counts.append(alive)
        assert counts[0] >= 1 and counts[-1] == 1, (name, counts)  # all merged near the top
        if name == "rastrigin":
            assert counts[1] > 1


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


def test_app_entry_point_navigates_to_the_toy_page():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "Toy landscapes"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served_app():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1",
         "--browser.gatherUsageStats", "false"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("streamlit did not start within 60 s: " + proc.stdout.read().decode()[-2000:])
    yield url
    proc.terminate()
    proc.wait(timeout=20)


@pytest.mark.browser
@pytest.mark.slow
def test_toy_page_in_a_real_browser(served_app):
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: install Debian's chromium (see .ci/run)")
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(served_app, wait_until="domcontentloaded")
        page.wait_for_selector(".js-plotly-plot .main-svg", timeout=60_000)
        page.wait_for_function(
            "document.querySelectorAll('.js-plotly-plot').length >= 4", timeout=60_000)
        # the app has finished running when the status widget no longer says so
        page.wait_for_function(
            "!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000)
        page.wait_for_timeout(500)
        assert page.locator('[data-testid="stException"]').count() == 0
        assert page.locator(".js-plotly-plot").count() == 4
        assert "Toy landscapes" in page.content()
        page.screenshot(path=str(ARTIFACTS / "toy_landscapes.png"), full_page=True)
        browser.close()
