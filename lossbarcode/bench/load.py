"""``lossbarcode bench load``: N sessions opening the dashboard at once on a fresh server.

Each round starts a fresh Streamlit server (``streamlit run app.py``: nothing imported yet, the
case where sessions race to import the same modules), opens ``sessions`` browser pages on one
page of the app at the same moment, and waits until every page is drawn. It reports, per round,
the seconds each session waited for its page, how many sessions showed an exception box (an
error of the app, e.g. a module imported by two sessions at once: "partially initialized
module"), and the server's resident memory before the sessions and after them.

The results folder is an empty temporary one, so the pages show the shipped demo runs and demo
sweep, as on a first open. The server and the browser come from
:mod:`lossbarcode.bench.browser`.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from typing import Any

from lossbarcode.bench.browser import launch_browser, serve_app, wait_ready

# Pages a load round may open: URL path -> (title, charts drawn when ready).
LOAD_PAGES = {"scaling": ("Scaling", 2), "": ("Explore a run", 3),
              "compare": ("Compare two runs", 4)}
ERROR_BOX = '[data-testid="stException"]'


def rss_bytes(pid: int) -> int | None:
    """Resident memory of process ``pid`` in bytes (Linux ``/proc``), None where unreadable."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def load_benchmark(sessions: int = 5, rounds: int = 1, page: str = "scaling",
                   timeout: float = 120) -> list[dict[str, Any]]:
    """One row per round: ``sessions``, ``page``, ``median_s`` / ``max_s`` (seconds from the
    sessions' common start to each page drawn), ``errors`` (sessions showing an exception
    box), ``error`` (the first box's text, else ""), ``not_ready`` (sessions not drawn within
    ``timeout`` s), and ``rss_before`` / ``rss_after`` (server bytes; None where unknown)."""
    if sessions < 1 or rounds < 1:
        raise ValueError(f"sessions and rounds must be >= 1, got {sessions} and {rounds}")
    if page not in LOAD_PAGES:
        raise ValueError(f"page must be one of {sorted(LOAD_PAGES)}, got {page!r}")
    title, charts = LOAD_PAGES[page]
    rows = []
    with tempfile.TemporaryDirectory() as folder, launch_browser() as browser:
        for _ in range(rounds):
            tabs = [browser.new_page(viewport={"width": 1280, "height": 900})
                    for _ in range(sessions)]
            with serve_app({"LOSSBARCODE_RESULTS": folder}) as (url, proc):
                rss_before = rss_bytes(proc.pid)
                start = time.perf_counter()
                for tab in tabs:  # all requests out before any page is waited on
                    tab.goto(f"{url}/{page}", wait_until="commit")
                waited, not_ready = [], 0
                for tab in tabs:
                    try:
                        wait_ready(tab, title, charts, timeout=timeout)
                        waited.append(time.perf_counter() - start)
                    except Exception:  # noqa: BLE001 - a page not drawn in time is a result
                        not_ready += 1
                boxes = [tab.locator(ERROR_BOX) for tab in tabs]
                failed = [b for b in boxes if b.count() > 0]
                rows.append({
                    "sessions": sessions, "page": page or "explore",
                    "median_s": statistics.median(waited) if waited else None,
                    "max_s": max(waited) if waited else None,
                    "errors": len(failed),
                    "error": failed[0].first.inner_text()[:300] if failed else "",
                    "not_ready": not_ready, "rss_before": rss_before,
                    "rss_after": rss_bytes(proc.pid)})
            for tab in tabs:
                tab.close()
    return rows


def print_load_benchmark(rows: list[dict[str, Any]]) -> None:
    """The rows as a table, memory in MiB."""
    def mib(n: int | None) -> str:
        return "?" if n is None else f"{n / 2**20:.0f}"

    def sec(s: float | None) -> str:
        return "-" if s is None else f"{s:.2f}"

    print(f"{'round':>5} {'page':<8} {'sessions':>8} {'median s':>9} {'max s':>7} "
          f"{'errors':>6} {'not ready':>9} {'RSS MiB before→after':>21}")
    for n, r in enumerate(rows, 1):
        print(f"{n:>5} {r['page']:<8} {r['sessions']:>8} {sec(r['median_s']):>9} "
              f"{sec(r['max_s']):>7} {r['errors']:>6} {r['not_ready']:>9} "
              f"{mib(r['rss_before']) + '→' + mib(r['rss_after']):>21}")
        if r["error"]:
            print(f"      first error: {r['error'].splitlines()[0]}")
