"""Shared helpers of the dashboard pages: cached reads, the job manager, run pickers.

Everything heavy is keyed by small values (the results folder and a run id), never by arrays,
and nothing here imports torch: the backend modules are imported inside the functions that
need them, so a page that only reads finished results stays fast.
"""

from __future__ import annotations

import io
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import streamlit as st

from lossbarcode import plots
from lossbarcode.choices import (  # noqa: F401  (the widgets' choices, read as ui.NAME)
    ARCHS,
    DATASETS,
    OPTIMIZERS,
    PAIRINGS,
    PATH_METHODS,
    SCHEDULES,
)
from lossbarcode.cli import reproduce_command
from lossbarcode.experiment import ExperimentConfig, Result, load_result
from lossbarcode.health import RunHealth, run_health
from lossbarcode.provenance import describe_config
from lossbarcode.store import ResultStore
from lossbarcode.topology import NORMALIZATIONS, NORMS, RULES  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
DEMO_SWEEP_ENV = "LOSSBARCODE_DEMO_SWEEP"
DEMO_SWEEP = ROOT / "assets" / "demo_sweep.json"
DEMO_RUNS_ENV = "LOSSBARCODE_DEMO_RUNS"
DEMO_RUNS = ROOT / "assets" / "demo_runs"
# How the shipped demo run was made (the default config); a test checks that it is current.
DEMO_RUN_COMMAND = "lossbarcode run --results assets/demo_runs"
PLOTLY_CONFIG = {"displaylogo": False,
                 "toImageButtonOptions": {"format": "png", "scale": 2}}



# --------------------------------------------------------------------------- navigation


def use_navigation() -> None:
    """Make sure this page runs inside ``app.py``'s ``st.navigation``.

    Streamlit treats an app with a ``pages/`` folder as a version-1 multipage app until the
    first ``st.navigation`` call of the process; until then a link straight to a page (e.g.
    ``/scaling?sweep=demo`` as the first request after the server starts) would run that
    script alone, without the app's navigation, layout and page names. Every page calls this
    first: in that case it switches the process to ``st.navigation`` and reruns, which lands on
    the same page (the url paths equal the file names), and then restores the link's query
    parameters, which that rerun drops. Otherwise it does nothing.
    """
    from streamlit import config

    try:  # an internal of Streamlit 1.4x-1.6x; without it there is nothing to switch
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:
        return
    if getattr(PagesManager, "uses_pages_directory", False):
        PagesManager.uses_pages_directory = False
        if config.get_option("global.appTest"):  # AppTest resets the flag before every run
            return
        st.session_state["_carried_query"] = {k: st.query_params.get_all(k)
                                               for k in st.query_params}
        st.rerun()
    carried = st.session_state.pop("_carried_query", None)
    if carried:
        st.query_params.update(carried)


# --------------------------------------------------------------------------- store and jobs


def store() -> ResultStore:
    """The results folder: ``$LOSSBARCODE_RESULTS`` or ``./results``."""
    return ResultStore()


@st.cache_resource(show_spinner=False)
def _manager(root: str):
    from lossbarcode.jobs import JobManager

    return JobManager(ResultStore(root))


def manager():
    """The process-wide :class:`~lossbarcode.jobs.JobManager` of the results folder, shared by
    every browser session (so two sessions asking for one run compute it once)."""
    return _manager(str(store().root))


def demo_runs_path() -> Path | None:
    """The shipped demo runs (``assets/demo_runs``; ``$LOSSBARCODE_DEMO_RUNS`` overrides it,
    an empty value turns them off)."""
    value = os.environ.get(DEMO_RUNS_ENV)
    if value is None:
        return DEMO_RUNS
    return Path(value) if value else None


@st.cache_resource(show_spinner=False)
def _demo_store(source: str) -> ResultStore | None:
    """A private copy of the demo runs: views derived from them (maps, slices) are cached
    next to a run, and the shipped folder stays as it was committed."""
    import shutil
    import tempfile

    if not Path(source).is_dir():
        return None
    copy = Path(tempfile.mkdtemp(prefix="lossbarcode-demo-")) / "runs"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns(".locks", ".trash-*"))
    return ResultStore(copy)


def demo_store() -> ResultStore | None:
    """The store of the shipped demo runs, or None when there are none."""
    path = demo_runs_path()
    return None if path is None else _demo_store(str(path))


def _finished(s: ResultStore) -> list[str]:
    """Ids of the finished runs of ``s``, most recent first."""
    try:
        ids = [r for r in s.list() if s.exists(r)]
    except OSError:
        return []

    def mtime(run_id: str) -> float:
        try:
            return (s.root / run_id / "result.json").stat().st_mtime
        except OSError:
            return 0.0

    return sorted(ids, key=mtime, reverse=True)


def finished_runs() -> list[str]:
    """Ids of the finished runs, most recent first: the results folder's, or, until it has
    one, the shipped demo runs."""
    own = _finished(store())
    if own:
        return own
    demo = demo_store()
    return _finished(demo) if demo is not None else []


def run_store(run_id: str) -> ResultStore:
    """The store that holds ``run_id``: the results folder, or the demo runs."""
    own = store()
    if not own.exists(run_id):
        demo = demo_store()
        if demo is not None and demo.exists(run_id):
            return demo
    return own


def is_demo(run_id: str) -> bool:
    """Whether ``run_id`` is shown from the shipped demo runs."""
    demo = demo_store()
    return demo is not None and run_store(run_id).root == demo.root


# cache_resource: one shared (frozen) Result per run instead of an unpickled copy per call;
# run pickers format every option through run_label() on each rerun.
@st.cache_resource(show_spinner=False, max_entries=256)
def _result(root: str, run_id: str) -> Result:
    result = load_result(ResultStore(root), run_id)
    if result is None:  # raising keeps the miss out of the cache
        raise LookupError(run_id)
    return result


def result(run_id: str | None) -> Result | None:
    """The finished result of ``run_id`` (cached by folder + run id), None if not finished."""
    if not run_id:
        return None
    try:
        return _result(str(run_store(run_id).root), run_id)
    except (LookupError, ValueError):
        return None


@st.cache_resource(show_spinner=False, max_entries=256)
def health(root: str, run_id: str) -> RunHealth:
    """:func:`lossbarcode.health.run_health` of a stored run (cached by folder + run id)."""
    return run_health(_result(root, run_id))


def run_health_of(r: Result) -> RunHealth:
    return health(str(run_store(r.run_id).root), r.run_id)


def run_label(run_id: str) -> str:
    """``"a1b2c3d4 · digits fcn 32×2 · K=8 · TO 0.0123"`` for pickers (``demo`` and
    ``broken`` marked)."""
    r = result(run_id)
    if r is None:
        return f"{run_id} (not finished)"
    c = r.config
    marks = (" · demo" if is_demo(run_id) else "") + (
        " · ⚠ broken" if run_health_of(r).broken else "")
    return (f"{run_id[:8]} · {c.dataset} {c.arch} {c.width}×{c.depth} · K={r.k} · "
            f"{c.schedule} lr · {c.path_method} · TO {c.score_variant} {r.score:.4g}{marks}")


def remember_run(run_id: str, param: str = "run", chosen: bool = True) -> None:
    """Make ``run_id`` the current run of this session and of the URL (``chosen``: by the
    user or a finished job, which ends the report of a bad link)."""
    st.session_state[f"current_{param}"] = run_id
    st.query_params[param] = run_id
    if chosen:
        st.session_state.pop(f"_missing_{param}", None)


NO_RUNS = ("No finished runs yet. Start one on the **Explore** page (or from the CLI: "
           "`lossbarcode run`), then come back.")


def picked_result(label: str = "Run", param: str = "run") -> Result:
    """:func:`run_picker` plus the finished result; stops the page when there is none."""
    chosen = result(run_picker(label, param))
    if chosen is None:
        st.stop()
    return chosen


def run_picker(label: str = "Run", param: str = "run", pending: Sequence[str] = (),
               default_index: int = 0, container: Any = None,
               empty_message: str = NO_RUNS) -> str | None:
    """A selectbox of finished runs bound to the URL query parameter ``param``.

    The initial choice is this session's last run, else the URL's run (a shared link opened
    in a new session), else ``runs[default_index]`` (most recent first). A URL run that is
    neither finished nor in ``pending`` (runs being computed) gets a warning. Returns the
    chosen id, or None (with a hint) when there is no finished run.
    """
    where = container or st
    runs = finished_runs()
    key = f"picker_{param}"
    missing_key = f"_missing_{param}"  # a bad link stays reported until another run is picked
    from_url = st.query_params.get(param)
    if from_url and from_url not in runs and from_url not in pending:
        st.session_state[missing_key] = from_url
    if not runs:
        if st.session_state.get(missing_key):
            missing_run_message(st.session_state[missing_key])
        if not pending:
            where.info(empty_message, icon=":material/info:")
        return None
    # Within a session the session's run is the truth and the URL its mirror: a fragment's
    # rerun carries the URL the browser had when it asked, which may predate the last change.
    # A link opened in a new session (no run remembered yet) names the run.
    remembered = st.session_state.get(f"current_{param}")
    wanted = from_url if from_url in runs and remembered not in runs else remembered
    if wanted not in runs:  # e.g. a run still being computed: keep what was shown
        shown = st.session_state.get(f"_shown_{param}")
        wanted = shown if shown in runs else runs[min(default_index, len(runs) - 1)]
    # The key names the run it opens on, so a selection the browser reports late (with a
    # fragment's rerun) belongs to an old widget and cannot switch the run back.
    choice = where.selectbox(label, runs, index=runs.index(wanted), key=f"{key}_{wanted}",
                             format_func=run_label)
    st.session_state[f"_shown_{param}"] = choice
    if choice != wanted:  # picked in the selectbox
        remember_run(choice, param)
    elif from_url not in pending:  # keep a shared link to a running job until it finishes
        remember_run(choice, param, chosen=False)
    if st.session_state.get(missing_key):
        missing_run_message(st.session_state[missing_key], instead=choice)
    return choice


def missing_run_message(run_id: str, instead: str | None = None) -> None:
    shown = f" Showing `{instead}` instead." if instead else ""
    st.warning(f"Run `{run_id}` is not in the results folder `{store().root}`.{shown} Check the "
               "link, or copy the run's folder there (it is plain JSON + npz), or start it on "
               "the Explore page.", icon=":material/search_off:")


def health_banner(r: Result) -> RunHealth:
    """The run's health at the top of a page: an error box for a broken run, a warning per
    caution, nothing for a healthy run. Returns the health."""
    found = run_health_of(r)
    for problem in found.problems:
        if problem.severity == "broken":
            st.error(f"**Broken run** · {problem.message} Its numbers are not a property of "
                     "the network: pooled statistics leave it out unless you include it.",
                     icon=":material/report:")
        else:
            st.warning(problem.message, icon=":material/warning:")
    return found


def demo_notice(run_id: str) -> None:
    """Say that ``run_id`` is the shipped demo run, how it was made, and where to start."""
    if not is_demo(run_id):
        return
    st.info("You are looking at the **demo run** shipped with the app (the default config: "
            f"digits, fcn 32×2, K = 8; made by `{DEMO_RUN_COMMAND}`). Your own runs replace "
            "it as soon as you have one.", icon=":material/school:")


def start_here() -> None:
    """The teacher's path through the app: toy landscape → one network → the scaling curve."""
    with st.container(border=True):
        st.markdown("**Start here** · three steps for a lecture or a first look")
        cols = columns(3)
        cols[0].page_link("pages/toy_landscapes.py", label="1 · A toy landscape",
                          icon=":material/landscape:", query_params={"toy": "three_hump_camel"})
        cols[0].caption("Sublevel sets, minima and saddles on a 2-D function; press play.")
        cols[1].page_link("pages/explore.py", label="2 · One network's barcode",
                          icon=":material/science:")
        cols[1].caption("Eight trained minima, the paths between them, their barcode.")
        cols[2].page_link("pages/scaling.py", label="3 · The scaling curve",
                          icon=":material/trending_down:", query_params={"sweep": "demo"})
        cols[2].caption("Wider networks have shallower traps: TO-score vs width and depth.")


# --------------------------------------------------------------------------- presentation


PRESENT_PARAM = "present"
PRESENT_FONT = 20  # chart font size on a projector
PRESENT_CSS = """<style>
html, body, [data-testid="stAppViewContainer"] { font-size: 22px; }
[data-testid="stSidebarUserContent"] { display: none; }
h1 { font-size: 2.6rem !important; }
[data-testid="stMetricValue"] { font-size: 2.1rem; }
[data-testid="stCaptionContainer"] { font-size: 1rem; }
</style>"""


def presenting() -> bool:
    """Whether the app is in presentation mode (``?present=1``): large fonts, charts stacked
    one per row, a sidebar with the page list only. The URL sets it when a session starts;
    then the session holds it (a page switch drops the URL's parameters, and a fragment's rerun
    may carry an old URL) and the URL mirrors it."""
    if "_present" not in st.session_state:  # a new session: the link says (see run_picker)
        st.session_state["_present"] = st.query_params.get(PRESENT_PARAM) == "1"
    return bool(st.session_state["_present"])


def presentation_controls() -> None:
    """The presentation-mode switch (sidebar, or a button at the top while presenting); the URL
    mirrors it, so that a shared link opens in the same mode. Called by ``app.py``."""
    if not presenting():
        st.query_params.pop(PRESENT_PARAM, None)
        if st.sidebar.button("Presentation mode", icon=":material/slideshow:",
                             key="enter_present", width="stretch",
                             help="Large fonts, charts stacked for a projector, the sidebar "
                                  "reduced to the page list."):
            st.session_state["_present"] = True
            st.rerun()
        return
    st.query_params[PRESENT_PARAM] = "1"
    st.html(PRESENT_CSS)
    if st.button("Exit presentation mode", icon=":material/close_fullscreen:",
                 key="exit_present"):
        st.session_state["_present"] = False
        st.rerun()


def columns(spec: int | Sequence[float], **kwargs: Any) -> list[Any]:
    """``st.columns(spec)``, or the same number of stacked full-width containers when
    presenting."""
    n = spec if isinstance(spec, int) else len(spec)
    if presenting():
        return [st.container() for _ in range(n)]
    return st.columns(spec, **kwargs)


# --------------------------------------------------------------------------- background views

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


# --------------------------------------------------------------------------- jobs


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "estimating…"
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min {seconds % 60:02.0f} s"
    return f"{seconds // 3600:.0f} h {seconds % 3600 // 60:02.0f} min"


def job_progress(job_id: str, label: str, cancel_key: str) -> None:
    """Live progress of a job (stage, step, ETA) with a cancel button; reruns the page when
    the job finishes. Only this block reruns while the job runs, so the page stays usable."""
    jm = manager()

    @st.fragment(run_every=0.5)
    def block() -> None:
        status = jm.status(job_id)
        if status is None or status.finished:
            st.rerun()
        with st.container(border=True):
            st.markdown(f"**{label}** · `{job_id}` · {status.state}")
            text = f"{status.stage}: {status.done}/{status.total}"
            if status.message:
                text += f" — {status.message}"
            st.progress(min(max(float(status.fraction), 0.0), 1.0), text=text)
            cols = st.columns([3, 1])
            cols[0].caption(f"elapsed {format_seconds(status.elapsed_s)} · "
                            f"ETA {format_seconds(status.eta_s)}")
            if cols[1].button("Cancel", key=cancel_key, icon=":material/cancel:",
                              width="stretch"):
                jm.cancel(job_id)
                st.rerun()

    block()


def job_outcome(job_id: str) -> Any:
    """Show how a finished job ended when it did not succeed; returns its status."""
    try:
        status = manager().status(job_id)
    except Exception:  # noqa: BLE001 - the manager is optional for reading results
        return None
    if status is None:
        return None
    if status.state == "failed":
        st.error(f"The job failed: {status.error or status.message}", icon=":material/error:")
    elif status.state == "cancelled":
        st.info("The job was cancelled. Finished stages are kept: running it again resumes "
                "from there.", icon=":material/cancel:")
    return status


def estimate(config: ExperimentConfig) -> dict[str, Any]:
    """The job manager's cost estimate (calibrated on the stored runs) plus ``"refusal"``: why
    the run cannot fit in memory, or None. Validates; imports torch: call it from
    :func:`background`, not in a page render."""
    from lossbarcode.cost import check_fits

    config = config.validate()
    try:
        check_fits(config)
    except ValueError as err:
        refusal: str | None = str(err)
    else:
        refusal = None
    return {**manager().estimate(config), "refusal": refusal}


def start_button(label: str, key: str, seconds: float | Callable[[], float], identity: Any,
                 **kwargs: Any) -> bool:
    """A button that starts work, asking first when it is estimated above
    :data:`~lossbarcode.cost.CONFIRM_ABOVE_S`: the first click then shows the estimate and a
    "Confirm: start (est. X)" button instead. True on the click that should start the work.
    ``seconds`` may be a function, called on a click (an estimate not computed yet);
    ``identity`` names what would start (e.g. the config): a change drops the question."""
    from lossbarcode.cost import CONFIRM_ABOVE_S

    asked = f"_confirm_{key}"
    if asked in st.session_state and st.session_state[asked] == identity:
        seconds = st.session_state[f"{asked}_s"]
        st.warning(f"This is estimated to take **{format_seconds(seconds)}** on this machine. "
                   "Start it?", icon=":material/schedule:")
        yes, back = st.columns(2)
        if yes.button(f"Confirm: start (est. {format_seconds(seconds)})", key=f"{key}_yes",
                      type="primary", width="stretch"):
            del st.session_state[asked]
            return True
        if back.button("Back", key=f"{key}_back", width="stretch"):
            del st.session_state[asked]
            st.rerun()
        return False
    if not st.button(label, key=key, **kwargs):
        return False
    if callable(seconds):
        seconds = seconds()
    if seconds > CONFIRM_ABOVE_S:
        st.session_state[asked] = identity
        st.session_state[f"{asked}_s"] = seconds
        st.rerun()
    return True


def config_key(config: ExperimentConfig) -> tuple:
    return tuple(sorted(config.to_dict().items()))


# --------------------------------------------------------------------------- sweeps


def demo_sweep_path() -> Path:
    return Path(os.environ.get(DEMO_SWEEP_ENV) or DEMO_SWEEP)


@st.cache_data(show_spinner=False, max_entries=8)
def _demo_sweep(path: str, mtime: float) -> dict[str, Any]:
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        raise ValueError(f"{path} is not a demo sweep file (no 'records' list)")
    data.setdefault("barcodes", {})  # the page summarises the records (broken runs or not)
    return data


def demo_sweep() -> dict[str, Any] | None:
    """The shipped demo sweep (``assets/demo_sweep.json`` or ``$LOSSBARCODE_DEMO_SWEEP``)."""
    path = demo_sweep_path()
    try:
        return _demo_sweep(str(path), path.stat().st_mtime)
    except FileNotFoundError:
        return None


def sweep_commands(document: dict[str, Any]) -> list[str]:
    """The ``lossbarcode sweep`` command(s) a sweep file records (a string or a list)."""
    commands = document.get("command") or []
    return [commands] if isinstance(commands, str) else [str(c) for c in commands]


def demo_sweep_plan(command: str) -> tuple[ExperimentConfig, dict[str, Any]]:
    """Base config and grid axes of a ``lossbarcode sweep ...`` command line."""
    import shlex

    from lossbarcode import cli

    words = shlex.split(command)
    if "sweep" not in words:
        raise ValueError(f"not a 'lossbarcode sweep' command: {command!r}")
    args = cli.build_parser().parse_args(words[words.index("sweep"):])
    axes: dict[str, Any] = {name: cli._ints(getattr(args, name))
                            for name in ("widths", "depths", "seeds")}
    axes["design"] = args.design
    return cli._config_from(args), axes


def sweep_family(config: ExperimentConfig) -> str:
    """Runs that differ only in width, depth and seed belong to one sweep family."""
    rest = {k: v for k, v in config.to_dict().items() if k not in ("width", "depth", "seed")}
    return json.dumps(rest, sort_keys=True)


@st.cache_data(show_spinner=False, max_entries=16)
def _families(root: str, run_ids: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    from lossbarcode.sweep import sweep_records

    groups: dict[str, list[Result]] = {}
    for run_id in run_ids:
        r = load_result(ResultStore(root), run_id)
        if r is not None:
            groups.setdefault(sweep_family(r.config), []).append(r)
    out = {}
    for family, results in groups.items():
        scales = {(r.config.width, r.config.depth) for r in results}
        if len(scales) < 2:
            continue
        c = results[0].config
        label = (f"{c.dataset} · {c.arch} · K={c.k} · {c.optimizer}/{c.schedule} · "
                 f"{c.path_method} ({len(results)} runs)")
        records = sweep_records(results)
        axes = {name: ",".join(str(v) for v in sorted({getattr(r.config, name) for r in results}))
                for name in ("width", "depth", "seed")}
        command = (reproduce_command(c.replace(width=ExperimentConfig.width,
                                               depth=ExperimentConfig.depth,
                                               seed=ExperimentConfig.seed), "sweep")
                   + f" --widths {axes['width']} --depths {axes['depth']} --seeds {axes['seed']}")
        out[family] = {
            "label": label, "records": records,
            "score_variant": records[0]["score_variant"], "base": c.to_dict(),
            "barcodes": {r.run_id: r.barcode.to_dict() for r in results},
            "description": describe_config(c, varied=("width", "depth", "seed")),
            "command": command,
        }
    return out


def store_sweeps() -> dict[str, dict[str, Any]]:
    """The sweep families in the results folder (>= 2 scales), keyed by family."""
    return _families(str(store().root), tuple(sorted(finished_runs())))


# --------------------------------------------------------------------------- downloads


def csv_text(rows: Sequence[dict[str, Any]]) -> str:
    """Rows of dicts as CSV (lists are written as JSON)."""
    import csv

    rows = list(rows)
    if not rows:
        return ""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, list | tuple | dict) else v
                         for k, v in row.items()})
    return buffer.getvalue()


def json_text(data: Any) -> str:
    return json.dumps(data, indent=1, default=_json_default, allow_nan=True)


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def downloads(items: Sequence[tuple[str, str, str, str]], container: Any = None) -> None:
    """A row of download buttons: ``(label, data, file name, mime)`` each."""
    where = container or st
    cols = where.columns(len(items))
    for col, (label, data, name, mime) in zip(cols, items, strict=True):
        col.download_button(label, data, file_name=name, mime=mime, icon=":material/download:",
                            key=f"dl_{name}", width="stretch")


def chart(fig: Any, key: str, name: str, container: Any = None, **kwargs: Any) -> Any:
    """``st.plotly_chart`` with a PNG download (toolbar camera) named after the view, and
    the title clear of the toolbar (:func:`lossbarcode.plots.clear_of_toolbar`)."""
    where = container or st
    if presenting():
        fig.update_layout(font_size=PRESENT_FONT, title_font_size=PRESENT_FONT + 4)
    config = {**PLOTLY_CONFIG,
              "toImageButtonOptions": {**PLOTLY_CONFIG["toImageButtonOptions"],
                                       "filename": name}}
    return where.plotly_chart(plots.clear_of_toolbar(fig), key=key, config=config, **kwargs)
