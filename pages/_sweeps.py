"""The sweeps the Scaling page can show: the shipped demo sweep file, and the sweep families
of the results folder (runs that differ only in width, depth and seed)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import streamlit as st

from lossbarcode.cli import reproduce_command
from lossbarcode.experiment import ExperimentConfig, Result, load_result
from lossbarcode.provenance import describe_config
from lossbarcode.store import ResultStore
from lossbarcode.sweep import read_sweep_file, sweep_family, sweep_records
from pages._runs import ROOT, finished_runs, store

DEMO = "demo"  # the demo sweep's key in the URL (``?sweep=demo``)
DEMO_SWEEP_ENV = "LOSSBARCODE_DEMO_SWEEP"
DEMO_SWEEP = ROOT / "assets" / "demo_sweep.json"
SCALES = ("width", "depth", "seed")  # what varies within a family


def demo_sweep_path() -> Path:
    """The shipped demo sweep file (``$LOSSBARCODE_DEMO_SWEEP`` overrides it)."""
    return Path(os.environ.get(DEMO_SWEEP_ENV) or DEMO_SWEEP)


@st.cache_data(show_spinner=False, max_entries=8)
def _demo_sweep(path: str, mtime: float) -> dict[str, Any]:
    """The file's document (``mtime`` in the key: an edited file is read again)."""
    return read_sweep_file(Path(path))


def demo_sweep() -> dict[str, Any] | None:
    """The demo sweep's document (:func:`lossbarcode.sweep.read_sweep_file`), or None when
    the file is missing; ``ValueError`` when it is not a sweep file."""
    path = demo_sweep_path()
    try:
        return _demo_sweep(str(path), path.stat().st_mtime)
    except FileNotFoundError:
        return None


def family_id(family: str) -> str:
    """A short id of a sweep family, for the URL."""
    return hashlib.sha1(family.encode()).hexdigest()[:10]


def _family_document(results: list[Result]) -> dict[str, Any]:
    """A family's runs shaped like a sweep file's document, plus a label for the picker."""
    c = results[0].config
    records = sweep_records(results)
    axes = {name: ",".join(str(v) for v in sorted({getattr(r.config, name) for r in results}))
            for name in SCALES}
    defaults = {name: getattr(ExperimentConfig, name) for name in SCALES}
    command = (reproduce_command(c.replace(**defaults), "sweep")
               + f" --widths {axes['width']} --depths {axes['depth']} --seeds {axes['seed']}")
    return {
        "label": (f"{c.dataset} · {c.arch} · K={c.k} · {c.training()[0]}/{c.schedule} · "
                  f"{c.path_method} ({len(results)} runs)"),
        "records": records, "score_variant": records[0]["score_variant"], "base": c.to_dict(),
        "barcodes": {r.run_id: r.barcode.to_dict() for r in results},
        "description": describe_config(c, varied=SCALES),
        "command": command,
    }


@st.cache_data(show_spinner=False, max_entries=16)
def _families(root: str, run_ids: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[Result]] = {}
    for run_id in run_ids:
        r = load_result(ResultStore(root), run_id)
        if r is not None:
            groups.setdefault(sweep_family(r.config), []).append(r)
    return {family: _family_document(results) for family, results in groups.items()
            if len({(r.config.width, r.config.depth) for r in results}) >= 2}


def store_sweeps() -> dict[str, dict[str, Any]]:
    """The sweep families in the results folder (>= 2 scales), keyed by family."""
    return _families(str(store().root), tuple(sorted(finished_runs())))


def sweep_sources() -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None]:
    """``(sources, demo)``: every sweep to show, keyed for the URL (the demo first, then the
    families, each with its ``family``), and the demo document (None when missing). An
    unreadable demo file is reported on the page and left out."""
    sources: dict[str, dict[str, Any]] = {}
    demo = None
    try:
        demo = demo_sweep()
    except ValueError as err:
        st.error(f"The demo sweep file is unreadable: {err}", icon=":material/error:")
    if demo is not None:
        sources[DEMO] = {**demo, "label": "Demo sweep (shipped)"}
    for family, data in store_sweeps().items():
        sources[family_id(family)] = {**data, "family": family}
    return sources, demo
