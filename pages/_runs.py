"""Where the dashboard's runs come from: the results folder, else the shipped demo runs.

Results and their health are cached by small values (a folder and a run id), never by arrays;
nothing here imports torch.
"""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from lossbarcode import choices
from lossbarcode.experiment import Result, load_result
from lossbarcode.health import RunHealth, run_health
from lossbarcode.store import ResultStore, copy_results

ROOT = Path(__file__).resolve().parents[1]
DEMO_RUNS_ENV = "LOSSBARCODE_DEMO_RUNS"
DEMO_RUNS = ROOT / "assets" / "demo_runs"
# The shipped demo runs, in the order the dashboard offers them: a narrow net whose barcode has
# bars well above the resolution floor first (the first picture of what a barcode is), then the
# default config, whose bars sit at the floor, as the contrast. A test checks both are current.
DEMO_WIDTHS = (8, choices.WIDTH)
DEMO_RUN_COMMAND = "lossbarcode run --results assets/demo_runs"


def demo_command(width: int) -> str:
    """The command that made the shipped demo run of ``width`` (the default config otherwise)."""
    return DEMO_RUN_COMMAND + ("" if width == choices.WIDTH else f" --width {width}")


# The demo runs also ship their default views (the maps and the slice the Minima map and
# Landscape slice pages open on: lossbarcode.views.default_views), made after the run by this
# command, so that a first open of those pages reads them and computes nothing.
DEMO_VIEWS_COMMAND = "lossbarcode views {run_id} --results assets/demo_runs"


def demo_views_command(run_id: str) -> str:
    """The command that made the default views shipped with the demo run ``run_id``."""
    return DEMO_VIEWS_COMMAND.format(run_id=run_id)


def store() -> ResultStore:
    """The results folder: ``$LOSSBARCODE_RESULTS`` or ``./results``."""
    return ResultStore()


def demo_runs_path() -> Path | None:
    """The shipped demo runs (``assets/demo_runs``; ``$LOSSBARCODE_DEMO_RUNS`` overrides it,
    an empty value turns them off)."""
    value = os.environ.get(DEMO_RUNS_ENV)
    if value is None:
        return DEMO_RUNS
    return Path(value) if value else None


@st.cache_resource(show_spinner=False)
def _demo_store(source: str) -> ResultStore | None:
    """A private copy of the demo runs, with the default views they ship (so a first open
    reads them): views derived from them later (other maps, slices) are cached next to a run,
    and the shipped folder stays as it was committed. Regular files only, bounded
    (:func:`lossbarcode.store.copy_results`); removed when the process exits, and copies left
    by processes that are gone are removed first."""
    import atexit
    import shutil
    import tempfile

    if not Path(source).is_dir():
        return None
    _remove_stale_copies(Path(tempfile.gettempdir()))
    folder = Path(tempfile.mkdtemp(prefix=f"{_DEMO_PREFIX}{os.getpid()}-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    copy_results(source, folder / "runs")
    return ResultStore(folder / "runs")


_DEMO_PREFIX = "lossbarcode-demo-"


def _remove_stale_copies(temp: Path) -> None:
    """Remove the demo copies of dashboard processes that ended without cleaning up."""
    import shutil

    for folder in temp.glob(f"{_DEMO_PREFIX}*-*"):
        pid = folder.name[len(_DEMO_PREFIX):].split("-")[0]
        if not pid.isdigit() or folder.is_symlink() or not folder.is_dir():
            continue
        try:
            os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass


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
    if demo is None:
        return []
    # Narrow first (DEMO_WIDTHS): the page opens on the barcode with visible bars. The
    # picker loads each listed result anyway; an unusable one goes last.
    order = {w: n for n, w in enumerate(DEMO_WIDTHS)}

    def rank(run_id: str) -> int:
        found = result(run_id)
        return len(order) if found is None else order.get(found.config.width, len(order))

    return sorted(_finished(demo), key=rank)


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
    try:
        return demo is not None and run_store(run_id).root == demo.root
    except ValueError:  # not a run id at all (e.g. a hand-edited link)
        return False


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
    except (LookupError, ValueError, OSError):  # unusable runs are left out, never raised
        return None


@st.cache_resource(show_spinner=False, max_entries=256)
def health(root: str, run_id: str) -> RunHealth:
    """:func:`lossbarcode.health.run_health` of a stored run (cached by folder + run id)."""
    return run_health(_result(root, run_id))


def run_health_of(r: Result) -> RunHealth:
    """:func:`health` of a loaded result, from the store that holds it."""
    return health(str(run_store(r.run_id).root), r.run_id)
