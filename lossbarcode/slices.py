"""The training loss on the plane through three minima of a stored run, with its barcode.

:func:`result_slice` rebuilds the run's landscape from its config, evaluates the loss on a
``resolution x resolution`` grid over the plane through minima ``a, b, c``
(:func:`lossbarcode.planes.plane_slice`, one batched evaluation), computes the grid's exact H0
barcode (:func:`lossbarcode.topology.grid_barcode`) and caches everything in the store as a
stage ``slice-<a>-<b>-<c>-<R>`` (``-m<margin x 1000>`` appended for a margin other than 0.25),
so each slice is computed once. A slice shows two dimensions out of P: its minima and bars
describe the slice, not the landscape, and usually include small spurious bars of the grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lossbarcode import choices, topology
from lossbarcode._checks import check_int
from lossbarcode.experiment import ExperimentConfig, build_landscape, load_minima, load_result
from lossbarcode.store import ResultStore
from lossbarcode.views import cached_view

__all__ = ["DEFAULT_MARGIN", "DEFAULT_RESOLUTION", "MIN_RESOLUTION", "ResultSlice",
           "default_minima", "result_slice"]

MIN_RESOLUTION = 5
DEFAULT_RESOLUTION = choices.SLICE_RESOLUTION
DEFAULT_MARGIN = choices.SLICE_MARGIN
INPUTS = ("minima",)  # the stages a slice is computed from


@dataclass(frozen=True, eq=False)
class ResultSlice:
    """Loss on a plane through three minima.

    Plane coordinates ``(x, y)`` put minimum ``a`` at ``(0, 0)`` and ``b`` on the positive
    x axis; the plane is spanned by ``b - a`` and the part of ``c - a`` orthogonal to it.

    Attributes:
        x: ``(R,)`` grid x coordinates; y: ``(R,)`` grid y coordinates.
        loss: ``(R, R)`` training loss (the run's evaluation set) with ``loss[i_x, i_y]`` at
            ``(x[i_x], y[i_y])``; transpose it for image/heatmap plots (rows = y).
        points: ``(3, 2)`` plane coordinates of minima ``a, b, c``.
        minima: ``(3,)`` the minima's indices in the run.
        point_loss: ``(3,)`` the loss exactly at ``a, b, c`` (evaluated with the grid).
        barcode: :func:`~lossbarcode.topology.grid_barcode` of ``loss`` (8-neighbour grid);
            its ``minima``/``saddles`` are flat indices into ``loss``:
            ``np.unravel_index(barcode.minima, loss.shape)`` gives ``(i_x, i_y)``. Points where
            the loss is not finite count as the highest loss on the grid.
        resolution: ``R``; margin: padding around the three points, as a fraction of the
            larger side of their bounding box.
    """

    x: np.ndarray
    y: np.ndarray
    loss: np.ndarray
    points: np.ndarray
    minima: np.ndarray
    point_loss: np.ndarray
    barcode: topology.Barcode
    resolution: int
    margin: float


def result_slice(
    store: ResultStore,
    run_id: str,
    minima: Sequence[int] = (0, 1, 2),
    resolution: int = DEFAULT_RESOLUTION,
    margin: float = DEFAULT_MARGIN,
) -> ResultSlice:
    """The loss slice through minima ``(a, b, c)`` of a stored run, computed once and cached.

    Args:
        store: the results store holding the run.
        run_id: a finished run (its ``minima`` stage, and its config from the ``result``).
        minima: three distinct indices of non-diverged minima; the order sets the axes.
        resolution: grid points per axis, at least :data:`MIN_RESOLUTION`.
        margin: padding around the three minima (fraction of their bounding box's larger side).

    Raises ``ValueError`` for repeated, out-of-range or diverged minima, a resolution below 5,
    a run without stored minima or config, or three (nearly) collinear minima.
    """
    resolution = check_int(resolution, "resolution", MIN_RESOLUTION)
    if isinstance(margin, bool) or not isinstance(margin, int | float) or not (
            math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    margin = float(margin)
    idx = _check_triple(minima)
    stage = _stage_name(idx, resolution, margin)

    def config() -> ExperimentConfig:
        """The run's config; ``ValueError`` when the run cannot be sliced yet."""
        if not store.has_stage(run_id, "minima"):
            raise ValueError(f"run {run_id} has no stored minima yet; run the experiment first")
        finished = load_result(store, run_id)
        if finished is None:
            raise ValueError(f"run {run_id} has no finished result, so its config is unknown; "
                             "wait for the run to finish")
        return finished.config

    def compute() -> ResultSlice:
        from lossbarcode.planes import plane_slice  # imports torch: only when computing

        run_config = config()
        found = load_minima(store, run_id)
        if found is None:
            raise ValueError(f"the stored minima of run {run_id} are unreadable; run the "
                             "experiment again to recompute them")
        bad = [i for i in idx if i >= found.k]
        if bad:
            raise ValueError(f"minima indices {bad} are out of range: run {run_id} has "
                             f"{found.k} minima (0..{found.k - 1})")
        diverged = [i for i in idx if found.diverged[i]]
        if diverged:
            raise ValueError(f"minima {diverged} of run {run_id} diverged; pick others "
                             f"(valid: {found.valid.tolist()})")
        landscape = build_landscape(run_config)
        a, b, c = (found.thetas[i] for i in idx)
        plane = plane_slice(landscape, a, b, c, resolution=resolution, margin=margin)
        loss = plane.loss
        result = ResultSlice(
            x=np.asarray(plane.x, dtype=np.float64), y=np.asarray(plane.y, dtype=np.float64),
            loss=loss, points=np.asarray(plane.points, dtype=np.float64),
            minima=np.asarray(idx, dtype=np.int64),
            point_loss=np.asarray(plane.point_loss, dtype=np.float64),
            barcode=topology.grid_barcode(_finite(loss)), resolution=resolution, margin=margin,
        )
        _save_slice(store, run_id, stage, result)
        return result

    return cached_view(store, run_id, lambda: _load_slice(store, run_id, stage), compute, config)


def default_minima(diverged: Sequence[bool]) -> tuple[int, int, int] | None:
    """The three minima a slice of a run goes through unless told otherwise: its first three
    non-diverged minima, in index order. ``diverged``: ``(K,)`` bool, one per minimum. None
    when fewer than three converged (no plane)."""
    valid = [i for i, bad in enumerate(diverged) if not bad]
    return (valid[0], valid[1], valid[2]) if len(valid) >= 3 else None


def _finite(loss: np.ndarray) -> np.ndarray:
    """``loss`` with NaN/inf replaced by its largest finite value (a barcode needs finite
    values; an overflowing loss is high, so it can only join the top plateau)."""
    ok = np.isfinite(loss)
    if not ok.any():
        raise ValueError("the loss is not finite anywhere on this slice; try a smaller margin")
    return np.where(ok, loss, loss[ok].max())


def _check_triple(minima: Any) -> tuple[int, int, int]:
    try:
        values = list(minima)
    except TypeError:
        raise ValueError(f"minima must be three indices, got {minima!r}") from None
    if len(values) != 3 or any(isinstance(v, bool) or not isinstance(v, int | np.integer)
                               for v in values):
        raise ValueError(f"minima must be three integer indices, got {minima!r}")
    a, b, c = (int(v) for v in values)
    if min(a, b, c) < 0:
        raise ValueError(f"minima indices must be >= 0, got {[a, b, c]}")
    if len({a, b, c}) != 3:
        raise ValueError(f"minima must be three different indices, got {[a, b, c]}")
    return a, b, c


def _stage_name(idx: tuple[int, int, int], resolution: int, margin: float) -> str:
    name = f"slice-{idx[0]}-{idx[1]}-{idx[2]}-{resolution}"
    if margin != DEFAULT_MARGIN:
        name += f"-m{round(margin * 1000)}"
    return name


def _save_slice(store: ResultStore, run_id: str, stage: str, s: ResultSlice) -> None:
    meta = {"minima": s.minima.tolist(), "resolution": s.resolution, "margin": s.margin,
            "barcode": s.barcode.to_dict()}
    arrays = {"x": s.x, "y": s.y, "loss": s.loss, "points": s.points,
              "point_loss": s.point_loss}
    store.save_stage(run_id, stage, meta, arrays, inputs=INPUTS)


def _load_slice(store: ResultStore, run_id: str, stage: str) -> ResultSlice | None:
    """The cached slice, or None if absent or unreadable (then recomputed, and replaced)."""
    stored = store.read(run_id, stage, warn=False)
    if stored is None:
        return None
    meta, a = stored
    try:
        return ResultSlice(
            x=a["x"], y=a["y"], loss=a["loss"], points=a["points"],
            minima=np.asarray(meta["minima"], dtype=np.int64), point_loss=a["point_loss"],
            barcode=topology.Barcode.from_dict(meta["barcode"]),
            resolution=int(meta["resolution"]), margin=float(meta["margin"]),
        )
    except (KeyError, TypeError, ValueError):
        return None
