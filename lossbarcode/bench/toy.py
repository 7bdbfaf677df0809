"""Toy-landscape animation benchmark: per-frame time in the browser, and no server round trip.

Opens the Toy landscapes page (``streamlit run app.py``) in headless Chromium through
Playwright, finds its animated sublevel-set figure and steps through every frame with
``Plotly.animate(gd, [name], {frame: {duration: 0, redraw: true}, transition: {duration: 0},
mode: "immediate"})``, timing each call with ``performance.now()`` from the call until its
promise resolves (plotly has then drawn the frame). Meanwhile it counts the websocket
messages the page sends to the Streamlit server: 0 means scrubbing never asks the server.
Next to the wall-clock time it reports the browser main thread's CPU time per frame (Chrome's
``ThreadTime`` metric), which other processes competing for the cores inflate much less.
The figure JSON size is that of the same figure built here (what the server sends once).
"""

from __future__ import annotations

import statistics
import tempfile
from typing import Any

from lossbarcode.bench.browser import launch_browser, serve_app, wait_ready

TARGET_MS = 50.0
# The animated figure's graph div: the one plotly holds frames for.
FIND_FIGURE_JS = """() => [...document.querySelectorAll('.js-plotly-plot')].find(
    g => g._transitionData && g._transitionData._frames.length > 1)"""
ANIMATE_JS = "async ([rounds]) => {\n  const gd = (" + FIND_FIGURE_JS + ")();\n" + """
  const names = gd._transitionData._frames.map(f => f.name);
  const times = [];
  for (let r = 0; r < rounds; r++) {
    for (const name of names) {
      const start = performance.now();
      await window.Plotly.animate(gd, [name], {frame: {duration: 0, redraw: true},
                                               transition: {duration: 0}, mode: 'immediate'});
      times.push(performance.now() - start);
    }
  }
  return {times: times, frames: names.length, level: gd.layout.meta};
}"""


def figure_json_bytes(toy: str, resolution: int = 201) -> int:
    """Bytes of the toy page's animated figure (default grid neighbours, no bar filter)."""
    from lossbarcode import grid_barcode, toys
    from lossbarcode.animation import sublevel_animation

    axes, values = toys.get(toy).grid(resolution)
    return len(sublevel_animation(axes, values, grid_barcode(values)).to_json())


def open_toy_page(browser: Any, url: str, toy: str, sent: list[str]) -> Any:
    """A new page on the Toy landscapes page of ``toy``, fully drawn, with every websocket
    message it sends appended to ``sent``."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(payload)))
    page.goto(f"{url}/toy_landscapes?toy={toy}", wait_until="domcontentloaded")
    wait_ready(page, "Toy landscapes", charts=4, timeout=120)
    page.wait_for_function(f"({FIND_FIGURE_JS})() !== undefined && window.Plotly", timeout=30_000)
    page.wait_for_timeout(500)  # let the page's own start-up messages go out
    return page


def animate_every_frame(page: Any, sent: list[str], rounds: int = 1) -> dict:
    """Step the animated figure through all its frames ``rounds`` times; returns
    ``{"times_ms", "cpu_ms", "frames", "messages_sent", "level"}``: wall-clock ms of each
    frame, main-thread CPU ms per frame, and the level shown at the end."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Performance.enable")

    def thread_seconds() -> float:
        metrics = cdp.send("Performance.getMetrics")["metrics"]
        return next(m["value"] for m in metrics if m["name"] == "ThreadTime")

    before, cpu_before = len(sent), thread_seconds()
    result = page.evaluate(ANIMATE_JS, [rounds])
    cpu_ms = (thread_seconds() - cpu_before) * 1000 / len(result["times"])
    page.wait_for_timeout(300)  # a message caused by the animation would be sent by now
    cdp.detach()
    return {"times_ms": result["times"], "cpu_ms": cpu_ms, "frames": result["frames"],
            "messages_sent": len(sent) - before, "level": result["level"]}


def toy_benchmark(toys: tuple[str, ...] = ("three_hump_camel", "rastrigin"),
                  rounds: int = 3) -> list[dict]:
    """Per-frame milliseconds of the in-figure animation for each toy (201 points per axis).

    Returns rows ``{"toy", "frames", "median_ms", "p95_ms", "max_ms", "cpu_ms", "json_kb",
    "messages_sent"}``; the first round of frames (plotly's warm-up) is not counted.
    """
    from lossbarcode import toys as toy_functions

    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    for toy in toys:
        toy_functions.get(toy)  # an unknown name: a ValueError listing the toys
    rows = []
    with tempfile.TemporaryDirectory() as folder, launch_browser() as browser, \
            serve_app({"LOSSBARCODE_RESULTS": folder}) as (url, _):
        for toy in toys:
            sent: list[str] = []
            page = open_toy_page(browser, url, toy, sent)
            animate_every_frame(page, sent)  # warm-up
            run = animate_every_frame(page, sent, rounds)
            times = sorted(run["times_ms"])
            rows.append({"toy": toy, "frames": run["frames"],
                         "median_ms": statistics.median(times),
                         "p95_ms": times[min(len(times) - 1, int(0.95 * len(times)))],
                         "max_ms": times[-1], "cpu_ms": run["cpu_ms"],
                         "json_kb": figure_json_bytes(toy) / 1024,
                         "messages_sent": run["messages_sent"]})
            page.close()
    return rows


def print_toy_benchmark(rows: list[dict]) -> None:
    """Print the rows of :func:`toy_benchmark` as a table, with the target."""
    print(f"Toy landscapes animation in headless Chromium: Plotly.animate per frame "
          f"(target < {TARGET_MS:.0f} ms), websocket messages sent while animating")
    print(f"{'toy':<18}  frames  median_ms  p95_ms  max_ms  cpu_ms/frame  figure_json_kb  "
          "messages_sent")
    for r in rows:
        print(f"{r['toy']:<18}  {r['frames']:6d}  {r['median_ms']:9.1f}  {r['p95_ms']:6.1f}  "
              f"{r['max_ms']:6.1f}  {r['cpu_ms']:12.1f}  {r['json_kb']:14.0f}  "
              f"{r['messages_sent']:13d}")
