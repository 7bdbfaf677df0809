"""The served dashboard in headless Chromium: what the browser benchmarks drive.

:func:`serve_app` runs ``streamlit run app.py`` (or another script) on a free localhost port,
:func:`launch_browser` starts Debian's Chromium through Playwright, and :func:`wait_ready` blocks
until a page is fully drawn. ``lossbarcode bench app`` and ``bench toy`` measure the app through
them; the browser tests reuse them.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]  # the clone: app.py and pages/
CHROMIUM = os.environ.get("LOSSBARCODE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# The page is drawn: expected title, >= n charts drawn, no stale element, script finished.
READY_JS = """([title, charts]) => {
  const h1 = document.querySelector('h1');
  if (!h1 || !h1.textContent.includes(title)) return false;
  if (document.querySelector('[data-testid="stStatusWidget"]')) return false;
  if (document.querySelector('[data-stale="true"]')) return false;
  return document.querySelectorAll('.js-plotly-plot .main-svg').length >= charts;
}"""


def free_port() -> int:
    """A localhost TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Block until the Streamlit server at ``url`` answers its health check; RuntimeError
    with the server's output if ``proc`` exits or ``timeout`` seconds pass first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("streamlit exited: " + _output(proc))
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"streamlit did not start within {timeout} s: " + _output(proc))


def _output(proc: subprocess.Popen) -> str:
    try:
        out, _ = proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        return ""
    return (out or b"").decode(errors="replace")[-2000:]


@contextlib.contextmanager
def serve_app(env: dict[str, str] | None = None, wait: bool = True, script: Path | None = None,
              ) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run ``streamlit run app.py`` (or ``script``) headless on a free localhost port; yields
    (url, process).

    ``env`` is added to the environment (e.g. ``LOSSBARCODE_RESULTS``). With ``wait`` the
    context is entered once the server answers its health check.
    """
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(script or "app.py"),
         "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1",
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        if wait:
            wait_healthy(url, proc)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextlib.contextmanager
def launch_browser() -> Iterator[Any]:
    """Headless Chromium (Debian's, at ``$LOSSBARCODE_CHROMIUM`` or /usr/bin/chromium)."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise FileNotFoundError(f"no Chromium at {CHROMIUM}: install Debian's chromium or set "
                                "LOSSBARCODE_CHROMIUM")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def wait_ready(page: Any, title: str, charts: int = 0, timeout: float = 60) -> None:
    """Block until the page shows ``title`` with ``charts`` charts and has finished running."""
    page.wait_for_function(READY_JS, arg=[title, charts], timeout=timeout * 1000, polling=20)
