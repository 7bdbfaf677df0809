"""Dashboard benchmark: app start to first rendered page, and cached page switches.

Drives the real app (``streamlit run app.py``) with headless Chromium through Playwright:

* **app start → first render**: from launching the Streamlit process to the default page
  (Explore, showing a finished run) being fully drawn: its title, its three charts, and no
  script still running. The browser is started before the clock, so only the app is timed.
* **first request → first render**: the same, from the server answering its health check
  (what a user waits for after opening the link of a running app's first session).
* **reference app**: the same two steps in a minimal two-page Streamlit app with one small
  chart per page, in the same browser: the floor of Streamlit + plotly on this machine, so the
  rows above read as ratios to it.
* **page switch (cached)**: clicking a page in the navigation until that page is fully drawn,
  for pages showing a finished result, after each page has been opened once (so the result is
  in ``st.cache_data``).

Each figure is the median of ``runs`` repetitions (a fresh Streamlit process per start). The
results folder is a temporary one holding one small finished run, computed before timing.
The server and the browser come from :mod:`lossbarcode.bench.browser`.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from lossbarcode.bench.browser import launch_browser, serve_app, wait_healthy, wait_ready

# Pages of a finished result timed for switching: (navigation label, title, charts drawn).
SWITCH_PAGES = (("Compare", "Compare two runs", 4),
                ("Generalization", "Segment length vs generalization", 1),
                ("Explore", "Explore a run", 3))


def _tiny_store(folder: str) -> str:
    from lossbarcode.choices import PRESETS
    from lossbarcode.experiment import ExperimentConfig, run_experiment
    from lossbarcode.store import ResultStore

    return run_experiment(ExperimentConfig(**PRESETS["tiny"][1]), ResultStore(folder)).run_id


def app_benchmark(runs: int = 5) -> list[dict]:
    """Median seconds of app start → first render and of cached page switches.

    Returns rows ``{"what", "median_s", "min_s", "max_s", "runs"}``.
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    starts: list[float] = []
    servers: list[float] = []
    renders: list[float] = []
    switches: dict[str, list[float]] = {label: [] for label, _, _ in SWITCH_PAGES}
    with tempfile.TemporaryDirectory() as folder, launch_browser() as browser:
        _tiny_store(folder)
        env = {"LOSSBARCODE_RESULTS": folder}
        for _ in range(runs):
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            start = time.perf_counter()
            with serve_app(env, wait=False) as (url, proc):
                wait_healthy(url, proc)
                servers.append(time.perf_counter() - start)
                page.goto(url, wait_until="commit")
                wait_ready(page, "Explore a run", charts=3)
                starts.append(time.perf_counter() - start)
                renders.append(starts[-1] - servers[-1])
                for label, title, charts in SWITCH_PAGES:  # first visits fill the caches
                    _switch(page, label, title, charts)
                for label, title, charts in SWITCH_PAGES:
                    switches[label].append(_switch(page, label, title, charts))
            page.close()

    def row(what: str, samples: list[float]) -> dict:
        return {"what": what, "median_s": statistics.median(samples), "min_s": min(samples),
                "max_s": max(samples), "runs": len(samples)}

    rows = [row("server process start → health check", servers),
            row("app start → first render (Explore with a result)", starts),
            row("first request → first render (server up)", renders)]
    rows += [row(f"page switch → {label} (cached result)", samples)
             for label, samples in switches.items()]
    rows += [row(what, samples) for what, samples in _reference(runs).items()]
    return rows


# The floor any Streamlit + plotly page has on this machine and browser: two pages, each a title
# and one three-point chart, switched through st.navigation.
_REFERENCE_PAGE = """import plotly.graph_objects as go
import streamlit as st
st.title({title!r})
st.plotly_chart(go.Figure(go.Scatter(x=[1, 2, 3], y=[1, 3, 2])))
"""
_REFERENCE_APP = """import streamlit as st
st.navigation([st.Page("one.py", title="One"), st.Page("two.py", title="Two")]).run()
"""


def _reference(runs: int) -> dict[str, list[float]]:
    """Seconds of the same steps in a minimal two-page Streamlit app with one chart each."""
    out: dict[str, list[float]] = {"reference app: first request → first render": [],
                                   "reference app: page switch": []}
    with tempfile.TemporaryDirectory() as folder, launch_browser() as browser:
        root = Path(folder)
        (root / "app.py").write_text(_REFERENCE_APP)
        for name, title in (("one", "Page one"), ("two", "Page two")):
            (root / f"{name}.py").write_text(_REFERENCE_PAGE.format(title=title))
        for _ in range(runs):
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            with serve_app(script=root / "app.py") as (url, _):
                start = time.perf_counter()
                page.goto(url, wait_until="commit")
                wait_ready(page, "Page one", charts=1)
                out["reference app: first request → first render"].append(
                    time.perf_counter() - start)
                _switch(page, "Two", "Page two", 1)
                _switch(page, "One", "Page one", 1)
                out["reference app: page switch"].append(_switch(page, "Two", "Page two", 1))
            page.close()
    return out


def _switch(page: Any, label: str, title: str, charts: int) -> float:
    start = time.perf_counter()
    page.locator('[data-testid="stSidebarNav"] a', has_text=label).first.click()
    wait_ready(page, title, charts)
    return time.perf_counter() - start


def print_app_benchmark(rows: list[dict]) -> None:
    """Print the rows of :func:`app_benchmark` as a table."""
    width = max(len(r["what"]) for r in rows)
    print(f"{'what'.ljust(width)}  median_s  min_s   max_s   runs")
    for r in rows:
        print(f"{r['what'].ljust(width)}  {r['median_s']:8.3f}  {r['min_s']:6.3f}  "
              f"{r['max_s']:6.3f}  {r['runs']}")
