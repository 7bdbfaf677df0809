"""First open of the view pages: seconds from opening the Minima map or the Landscape slice page
on the demo run to its first chart, with and without the views the demo runs ship.

Each figure is one fresh Python process (a cold Streamlit: no cached view, no background
computation started, torch and UMAP not imported) driving the app with Streamlit's
``AppTest``: the app's first page is rendered, then the clock starts, the page is opened and
rerun every :data:`POLL_S` seconds (the pages' own polling period while a view is computed)
until it shows a chart ("first chart": on the Minima map possibly the interim PCA map) and
until it no longer says it is computing ("final view": the default view is shown). The
results folder is empty, so the page opens on the demo run it offers first; the demo runs
are a temporary copy of ``assets/demo_runs``, either as shipped ("shipped views") or with
every view stage removed ("no views": what the pages did before the views were shipped, and
what they do for a user's own run).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PAGES = ("minima_map", "landscape_slice")
POLL_S = 0.5

_CHILD = """
import json, sys, time
from streamlit.testing.v1 import AppTest

page, limit, poll = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
at = AppTest.from_file("app.py", default_timeout=limit)
at.run()
start = time.perf_counter()
at.switch_page(f"pages/{page}.py").run()


def waiting():
    return any("updates by itself" in str(e.value) for e in [*at.info, *at.caption])


first = None
while not at.exception and time.perf_counter() - start < limit:
    if first is None and at.get("plotly_chart"):
        first = time.perf_counter() - start
    if first is not None and not waiting():
        break
    time.sleep(poll)
    at.run()
final = time.perf_counter() - start if not waiting() else None
print(json.dumps({"seconds": first, "final_s": final, "charts": len(at.get("plotly_chart")),
                  "exception": [str(e.value)[:200] for e in at.exception],
                  "run": at.query_params.get("run")}))
"""


def strip_views(folder: Path) -> list[str]:
    """Drop every view stage (any stage outside the pipeline: maps, slices) from the runs in
    ``folder`` through the store; returns the ``run/stage`` names dropped."""
    from lossbarcode.experiment import PIPELINE
    from lossbarcode.store import ResultStore

    store, removed = ResultStore(folder), []
    for run_id in store.list():
        for stage in store.stages(run_id):
            if stage not in PIPELINE:
                store.drop_stage(run_id, stage)
                removed.append(f"{run_id}/{stage}")
    return removed


def first_open_benchmark(app_root: Path | None = None, limit_s: float = 300.0) -> list[dict]:
    """Rows ``{"page", "views", "seconds", "final_s", "charts", "run", "exception"}``:
    seconds to the first chart of each page in :data:`PAGES` (``seconds``; the Minima map's
    first chart may be the interim PCA map) and until it stops computing (``final_s``: the
    default view is shown), with the shipped views and without any.

    ``app_root``: the checkout whose ``app.py`` and ``assets/demo_runs`` are timed (default:
    this one). A page that shows nothing within ``limit_s`` reports None.
    """
    root = Path(app_root or Path(__file__).resolve().parents[2]).resolve()
    demo = root / "assets" / "demo_runs"
    if not (root / "app.py").is_file() or not demo.is_dir():
        raise ValueError(f"{root} holds no app.py and assets/demo_runs to time")
    rows = []
    for views in ("no views", "shipped views"):
        for page in PAGES:
            with tempfile.TemporaryDirectory() as tmp:
                copy = Path(tmp) / "demo_runs"
                shutil.copytree(demo, copy)
                if views == "no views":
                    strip_views(copy)
                env = {**os.environ, "LOSSBARCODE_RESULTS": str(Path(tmp) / "empty"),
                       "LOSSBARCODE_DEMO_RUNS": str(copy), "PYTHONPATH": str(root),
                       "TMPDIR": tmp}
                done = subprocess.run(
                    [sys.executable, "-c", _CHILD, page, str(limit_s), str(POLL_S)], cwd=root,
                    env=env, capture_output=True, text=True, timeout=limit_s + 120, check=False)
                if done.returncode != 0:
                    raise RuntimeError(f"timing {page} failed: {done.stderr[-1000:]}")
                rows.append({"page": page, "views": views,
                             **json.loads(done.stdout.strip().splitlines()[-1])})
    return rows


def print_first_open_benchmark(rows: list[dict]) -> None:
    """Print the rows of :func:`first_open_benchmark` as a table."""
    print(f"{'page':16}  {'demo runs':13}  {'run':16}  {'first chart (s)':>15}  "
          "final view (s)")
    for r in rows:
        first = "none" if r["seconds"] is None else f"{r['seconds']:.2f}"
        final = "not done" if r["final_s"] is None else f"{r['final_s']:.2f}"
        line = f"{r['page']:16}  {r['views']:13}  {r['run'] or '':16}  {first:>15}  {final}"
        if r["exception"]:
            line += f"  exception: {r['exception'][0]}"
        print(line)
