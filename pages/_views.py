"""Background views: computations of seconds (maps, slices, estimates) in a worker thread
shared by every session, polled by the page until they are done."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import streamlit as st

_MAX_VIEWS = 64


@st.cache_resource(show_spinner=False)
def _views() -> dict[str, Any]:
    return {"pool": ThreadPoolExecutor(max_workers=1, thread_name_prefix="lossbarcode-view"),
            "futures": OrderedDict(), "lock": threading.Lock()}


def background(key: tuple, fn: Callable[..., Any], *args: Any, retry: bool = False) -> Future:
    """Compute ``fn(*args)`` once per ``key`` in a worker thread shared by all sessions.

    Used for views that take seconds (minima maps, plane slices) so that no page render
    computes them. A failed computation is kept (to show its message) until ``retry``.
    """
    views = _views()
    with views["lock"]:
        futures: OrderedDict = views["futures"]
        future = futures.get(key)
        if future is None or (retry and future.done() and future.exception() is not None):
            future = views["pool"].submit(fn, *args)
            futures[key] = future
        futures.move_to_end(key)
        while len(futures) > _MAX_VIEWS:
            oldest = next(iter(futures))
            if not futures[oldest].done():
                break
            del futures[oldest]
    return future


def view_future(key: tuple) -> Future | None:
    """The background computation of ``key``, if one was started."""
    views = _views()
    with views["lock"]:
        return views["futures"].get(key)


def deferred_view(key: tuple, fn: Callable[..., Any], *args: Any, message: str,
                  delay_ticks: int = 6) -> Any:
    """Like ``await_view(background(key, fn, *args), message, quiet=True)``, but a view not
    computed yet starts ``delay_ticks`` polls (0.5 s each) after the page was drawn, so that
    its work (e.g. importing torch for a cost estimate) does not slow the first render."""
    future = view_future(key)
    if future is not None:
        return await_view(future, message, quiet=True)
    ticks = f"_deferred_{hash(key)}"
    st.session_state.setdefault(ticks, 0)

    def ready() -> bool:
        st.session_state[ticks] = st.session_state.get(ticks, 0) + 1
        return (st.session_state[ticks] > delay_ticks
                and background(key, fn, *args).done())

    _poll(ready, message, quiet=True)
    return None


def await_view(future: Future, message: str, quiet: bool = False) -> Any:
    """The value of a background view, or None while it runs (then the page polls and reruns
    when it is done). Bad input shows the library's message, never a traceback. ``quiet``
    shows ``message`` as a caption instead of an info box."""
    if not future.done():
        _poll(future.done, message, quiet)
        return None
    error = future.exception()
    if error is not None:
        show_error(error)
        return None
    return future.result()


def await_with_interim(primary: Future, interim: Future, message: str) -> tuple[Any, bool]:
    """``(value, is_interim)``: the primary view when it is done, else the interim one (a quick
    stand-in, e.g. PCA while UMAP compiles) once that is done, else ``(None, False)``. Polls
    until the primary is done, with ``message`` as a caption."""
    if primary.done():
        return await_view(primary, message), False
    shown = interim.done()
    _poll(lambda: primary.done() or (not shown and interim.done()), message, quiet=True)
    if shown and interim.exception() is None:
        return interim.result(), True
    return None, False


def _poll(ready: Callable[[], bool], message: str, quiet: bool) -> None:
    """Show ``message`` in a fragment that reruns itself until ``ready()``, then the page.

    The page is rerun only from a fragment rerun, never during a full run: a full run may be
    the one that carries a button click, which a rerun would drop.
    """
    full_run = "_poll_in_full_run"

    @st.fragment(run_every=0.5 if quiet else 0.75)
    def poll() -> None:
        if ready() and not st.session_state.get(full_run):
            st.rerun()
        if quiet:
            st.caption(message)
        else:
            st.info(message, icon=":material/hourglass_top:")

    st.session_state[full_run] = True
    try:
        poll()
    finally:
        st.session_state[full_run] = False


def show_error(error: BaseException) -> None:
    """A readable message for an exception from the library (no traceback)."""
    if isinstance(error, FileNotFoundError | ValueError | LookupError | TimeoutError):
        st.error(str(error), icon=":material/error:")
    elif isinstance(error, ImportError):
        st.error(f"A package this view needs is missing: {error}. Install it with pip and "
                 "restart the app.", icon=":material/error:")
    else:
        st.error(f"{type(error).__name__}: {error}", icon=":material/error:")
