"""Plane slices: the training loss on a grid in the plane through three parameter vectors.

:func:`plane_slice` spans the plane through ``a, b, c`` (each ``(P,)``) with an orthonormal
basis (``a`` at the origin, ``b`` on the positive x axis) and evaluates the loss on a square
grid covering the three points, in one batched, memory-capped evaluation.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lossbarcode._checks import check_int
from lossbarcode.blocks import items_per_block
from lossbarcode.landscape import Landscape


@dataclass(frozen=True, eq=False)
class PlaneSlice:
    """Training loss on the plane through three parameter vectors ``a, b, c``.

    Plane coordinates ``(x, y)`` map to ``origin + x * basis[0] + y * basis[1]``; ``a`` is at
    ``(0, 0)``, ``b`` on the positive x axis.

    Attributes:
        x: ``(R,)`` grid x coordinates; y: ``(R,)`` grid y coordinates.
        loss: ``(R, R)`` with ``loss[i_x, i_y]`` the loss at ``(x[i_x], y[i_y])``, the order
            of every grid here (:class:`~lossbarcode.slices.ResultSlice`, the toy functions'
            grids); transpose it for image/heatmap plots (rows = y).
        points: ``(3, 2)`` plane coordinates of ``a, b, c``.
        point_loss: ``(3,)`` loss exactly at ``a, b, c`` (evaluated with the grid).
        origin: ``(P,)`` CPU tensor (= ``a``); basis: ``(2, P)`` orthonormal CPU tensor.
    """

    x: np.ndarray
    y: np.ndarray
    loss: np.ndarray
    points: np.ndarray
    point_loss: np.ndarray
    origin: Tensor
    basis: Tensor

    # Deprecated names (until Dec 2026 ``loss`` was indexed [i_y, i_x]): kept so old code
    # runs, with a warning that says the grid's order changed.
    @property
    def xs(self) -> np.ndarray:
        _renamed("xs", "x")
        return self.x

    @property
    def ys(self) -> np.ndarray:
        _renamed("ys", "y")
        return self.y

    @property
    def positions(self) -> np.ndarray:
        _renamed("positions", "points")
        return self.points

    def to_params(self, x: Any, y: Any) -> Tensor:
        """Parameter vectors at plane coordinates ``x, y`` (same shape ``S``) -> ``(*S, P)``."""
        xt = torch.as_tensor(np.asarray(x, dtype=np.float64), dtype=self.origin.dtype)
        yt = torch.as_tensor(np.asarray(y, dtype=np.float64), dtype=self.origin.dtype)
        return self.origin + xt[..., None] * self.basis[0] + yt[..., None] * self.basis[1]


def _renamed(old: str, new: str) -> None:
    warnings.warn(f"PlaneSlice.{old} is deprecated: use .{new}; note that .loss is now indexed "
                  "[i_x, i_y] (it was [i_y, i_x])", DeprecationWarning, stacklevel=3)


def plane_slice(
    landscape: Landscape,
    a: Tensor,
    b: Tensor,
    c: Tensor,
    resolution: int = 25,
    margin: float = 0.25,
) -> PlaneSlice:
    """Training loss on a ``resolution x resolution`` grid in the plane through ``a, b, c``
    (each ``(P,)``), covering the three points plus ``margin`` times the larger side of their
    bounding box on every side. One batched (chunked) evaluation on the evaluation set."""
    resolution = check_int(resolution, "resolution", 2)
    if not (margin >= 0 and math.isfinite(margin)):
        raise ValueError(f"margin must be a finite number >= 0, got {margin}")
    pts = landscape.as_thetas(torch.stack([torch.as_tensor(v).reshape(-1) for v in (a, b, c)]))
    pts = pts.to(torch.float64)
    u = pts[1] - pts[0]
    nu = float(u.norm())
    if nu == 0:
        raise ValueError("a and b coincide; the three points must span a plane")
    u = u / nu
    w = pts[2] - pts[0]
    v = w - (w @ u) * u
    nv = float(v.norm())
    # Relative to the working precision: thinner triangles are collinear up to round-off.
    if nv <= 1e3 * torch.finfo(landscape.dtype).eps * max(nu, float(w.norm())):
        raise ValueError("a, b and c are (nearly) collinear; they must span a plane")
    v = v / nv
    pos = np.array([[0.0, 0.0], [nu, 0.0], [float(w @ u), nv]])
    lo, hi = pos.min(axis=0), pos.max(axis=0)
    pad = margin * float((hi - lo).max())
    xs = np.linspace(lo[0] - pad, hi[0] + pad, resolution)
    ys = np.linspace(lo[1] - pad, hi[1] + pad, resolution)
    gx, gy = np.meshgrid(xs, ys, indexing="ij")  # loss[i_x, i_y]
    coords = np.concatenate([np.stack([gx.ravel(), gy.ravel()], 1), pos])
    coords_t = torch.as_tensor(coords, device=landscape.device, dtype=torch.float64)
    origin, basis = pts[0], torch.stack([u, v])

    def make(s0: int, s1: int) -> Tensor:
        return (origin + coords_t[s0:s1] @ basis).to(landscape.dtype)

    vals = _evaluate_points(landscape, coords.shape[0], make)
    n = resolution * resolution
    return PlaneSlice(
        x=xs, y=ys, loss=vals[:n].reshape(resolution, resolution), points=pos,
        point_loss=vals[n:], origin=origin.to(landscape.dtype).cpu(),
        basis=basis.to(landscape.dtype).cpu(),
    )


def _evaluate_points(land: Landscape, n: int, make: Callable[[int, int], Tensor]) -> np.ndarray:
    """Loss ``(n,)`` of points made in blocks by ``make(start, stop) -> (stop-start, P)``."""
    block = items_per_block(land, 1)
    parts = [land.loss(make(s, min(n, s + block))).to("cpu", torch.float64).numpy()
             for s in range(0, n, block)]
    return np.concatenate(parts)
