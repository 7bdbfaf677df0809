"""Low-loss paths between minima, their loss profiles and barriers.

:func:`connect` joins pairs of minima with a chain of parameter vectors ("images", endpoints
included) and measures each path's *barrier*: the highest training loss along it.

Methods:

* ``linear``: the straight segment (a cheap upper bound).
* ``neb``: nudged elastic band. Every interior image moves along minus the loss gradient with
  its component along the chain tangent (central difference of the neighbouring images) removed;
  endpoints stay fixed; after each step every interior image slides along its tangent towards
  the arc-length midpoint of its neighbours (a spring relaxation of strength ``spring``), which
  keeps the images spread. AutoNEB-style cycles: the steps are split into ``cycles`` parts, and
  after each part but the last, ``insert`` new images are put at the midpoints of the segments
  where the loss is highest.
* ``bezier``: a quadratic Bezier curve ``(1-t)^2 a + 2t(1-t) b + t^2 c`` whose bend ``b`` starts
  at the midpoint and is trained on the loss at ``t_samples`` random (stratified) ``t`` per step.

All pairs x images are optimised together: each step stacks every interior image (or curve point)
of every pair into one ``(B, P)`` tensor and calls the landscape once. NEB and Bezier images use
minibatches of ``batch_size`` training examples, one shared minibatch per step (seeded).

Barriers: the loss is evaluated densely along every path (each image plus ``eval_points``
interpolated points between neighbouring images; for Bezier, the curve itself at the same number
of evenly spaced ``t``) on the landscape's evaluation set (the full training set unless it has an
``eval_subset``). The barrier is the maximum of this profile, never below the two endpoint losses
recorded in :class:`~lossbarcode.minima.Minima` (a path contains its endpoints; the clamp only
absorbs float round-off). A path is never reported worse than the straight line it started from:
if an optimised path's barrier exceeds the linear one, the straight line is kept (``fallback``).
A NaN loss anywhere on a path makes its barrier ``inf`` (treated as "not connected").

Pair planning (:mod:`lossbarcode.planning`): ``pairs="all"`` connects every pair of
non-diverged minima; ``pairs="mst"`` computes cheap straight-line barriers for all pairs (at
``screen_points`` points each), optimises their minimum spanning tree first, then only the
pairs whose lower bound (their higher endpoint loss) undercuts the highest barrier on their
current route through optimised paths: a pair that cannot undercut its route cannot change the
barcode, so the barcode is the all-pairs one with far fewer paths where barriers vanish.
Diverged minima are never paired.

Restarts: every path is an upper bound on its pair's barrier, and a path optimised from one
start finds *a* minimum-energy path, not the lowest. The pairs that decide the barcode (the
minimum spanning forest of the barriers, at most K-1; not those already monotone) are
re-solved from ``restarts - 1`` other starts (the chain along the pair's best route through
other minima, then straight lines bent by a random perpendicular offset, in opposite pairs so
both sides of the line are tried); each restart is one more path of the pair (``role``
"restart", ``start`` "route" or "bent"), the lowest counts, and the spread says how sure the
barrier is. The forest is recomputed and new deciding pairs restarted until it stops changing.
A deciding pair whose lowest NEB path did not converge (capped or stalled) is also solved by the
independent string method (:mod:`lossbarcode.string_method`, from the straight line, with NEB's
whole step budget; ``start`` "string"), in place of one bent start: on narrow networks NEB
stops far above the saddle that method reaches (``lossbarcode bench convergence``: fcn 8x2,
excess 1.52 against 0.00066 on one pair), and the lowest path of the pair counts whichever
method found it.

Certificates: a path is *stalled* when its step size fell below ``PATH_STALL`` times its
initial value (never converged), and *capped* when it used its step budget. Each path stores
the full-batch gradient norm at its top (``top_grad_norm``): a converged top is a critical point
(a saddle) when that is at most ``grad_tol``; NEB's full-batch phase runs until it is.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lossbarcode import planning
from lossbarcode._checks import check_int as _check_int
from lossbarcode._checks import check_positive
from lossbarcode.blocks import items_per_block
from lossbarcode.choices import (
    BEZIER_T_SAMPLES,
    MINIMA_TOL,
    NEB_CYCLES,
    NEB_INSERT,
    NEB_TOP_INSERTS,
    PAIRING,
    PAIRINGS,
    PATH_ATOL,
    PATH_BATCH_SIZE,
    PATH_CYCLE_STEPS,
    PATH_EVAL_POINTS,
    PATH_FINAL_STEPS,
    PATH_GOLDEN_PEAKS,
    PATH_GOLDEN_STEPS,
    PATH_IMAGES,
    PATH_LR,
    PATH_MAX_STEPS,
    PATH_METHOD,
    PATH_METHODS,
    PATH_OPTIMIZER,
    PATH_RESTARTS,
    PATH_STALL,
    PATH_TOL,
    PATHS_VERSION,
    SCREEN_POINTS,
)
from lossbarcode.landscape import Landscape
from lossbarcode.minima import BatchedOptimizer, Minima
from lossbarcode.planes import PlaneSlice as PlaneSlice  # kept for compatibility
from lossbarcode.planes import plane_slice as plane_slice  # kept for compatibility
from lossbarcode.seeds import derive_seed
from lossbarcode.topology import pair_barrier_matrix

METHODS = PATH_METHODS
DEFAULT_LR = PATH_LR  # kept for compatibility: the path step sizes, choices.PATH_LR
Progress = Callable[[int, int, dict[str, Any]], Any]
CYCLE_STEPS = PATH_CYCLE_STEPS  # kept for compatibility
_FINAL_CHECK = 25  # full-batch steps between two convergence checks
_GROW, _SHRINK, _MAX_GROWTH = 1.5, 0.5, 64.0  # step-size adaptation per cycle (bold driver)
# FIRE (Bitzek et al. 2006), the full-batch phase's optimiser: the standard constants.
_FIRE_N_MIN, _FIRE_INC, _FIRE_DEC, _FIRE_ALPHA, _FIRE_F_ALPHA, _FIRE_DT_MAX = (
    5, 1.1, 0.5, 0.1, 0.99, 10.0)
_CHECK_GOLDEN_STEPS = 20  # golden-section steps of the profiles measured at each check
_PATIENCE = 2  # calm checks in a row that make a path converged
# Each stage's random streams (its minibatches, Bezier's t) are seeded by (seed, the stage's
# fixed key), never by how many stages ran before, so a stage draws the same numbers whatever
# the order of the stages. The keys are part of every stored run's numbers: never change them.
_STAGE_KEY = {"all": 1, "list": 2, "tree": 3, "shortcut": 4, "restart": 5}
_BEZIER_T_KEY = 7  # second key of Bezier's random-t stream (the first is the stage's)
_BENT_KEY = 11  # second key of the restarts' random bend directions
_BEND = 0.25  # a bent start's largest offset, as a share of the distance between the minima
_GOLDEN = (math.sqrt(5) - 1) / 2


@dataclass(frozen=True, eq=False)
class Paths:
    """Paths between pairs of minima and the loss along them.

    Attributes:
        pairs: ``(M, 2)`` int64 minima indices, ``i < j``.
        images: ``M`` CPU tensors of shape ``(n_m, P)``, each chain from minimum ``i`` to
            minimum ``j``, endpoints included.
        profile_t: ``M`` arrays ``(L_m,)`` in [0, 1]: position along the path (normalised arc
            length of the chain; for Bezier the curve parameter ``t``).
        profile_loss: ``M`` arrays ``(L_m,)``: training loss at those positions.
        barriers: ``(M,)`` highest loss along each path (>= both endpoint losses).
        linear_barriers: ``(M,)`` the same for the straight segment.
        fallback: ``(M,)`` bool, True where the optimised path was worse than the straight
            segment and the straight segment is reported instead.
        role: ``(M,)`` how the pair was chosen: "all", "list", "tree", "shortcut" (a pair that
            could undercut its route) or "restart" (one more start of a deciding pair).
        minima_loss: ``(K,)`` the minima's training losses (NaN for diverged ones).
        method: "linear", "neb" or "bezier".
        settings: the remaining arguments of :func:`connect`, JSON-safe (``"version"``: the
            path algorithm, :data:`~lossbarcode.choices.PATHS_VERSION`).
        converged: ``(M,)`` bool, True where the path met the stopping rule before its step
            caps (never for a fixed step budget; always for straight lines).
        steps_used: ``(M,)`` optimisation steps spent on each path (minibatch + full batch).
        barrier_history: ``M`` arrays: the path's barrier (the top of its dense profile on the
            evaluation set) at the start and after each cycle / check.
        history_steps: ``M`` int arrays, the same lengths: the steps used at those checks.
        perp_grad_norm: ``(M,)`` the largest evaluation-set loss gradient norm perpendicular to
            the final chain, over its interior images (NaN where unknown).
        stalled: ``(M,)`` bool, True where the step size fell below its floor before the path
            converged (never both).
        top_grad_norm: ``(M,)`` full-batch gradient norm of the loss at the path's top (the
            point of its barrier): at most ``grad_tol`` where the top is a critical point.
        start: ``(M,)`` where the optimisation started: "line" (the straight segment),
            "route" (the chain along the pair's best route through other minima), "bent"
            (a straight segment bent by a random perpendicular offset) or "string" (the
            straight segment, solved by the string method: NEB's cross-check on a deciding
            pair it could not converge).
    """

    pairs: np.ndarray
    images: tuple[Tensor, ...]
    profile_t: tuple[np.ndarray, ...]
    profile_loss: tuple[np.ndarray, ...]
    barriers: np.ndarray
    linear_barriers: np.ndarray
    fallback: np.ndarray
    role: np.ndarray
    minima_loss: np.ndarray
    method: str
    settings: dict[str, Any]
    converged: np.ndarray
    steps_used: np.ndarray
    barrier_history: tuple[np.ndarray, ...]
    perp_grad_norm: np.ndarray
    history_steps: tuple[np.ndarray, ...]
    stalled: np.ndarray
    top_grad_norm: np.ndarray
    start: np.ndarray

    @property
    def version(self) -> int:
        """The path algorithm that made these paths (1: a fixed step budget)."""
        return int(self.settings.get("version", 1))

    @property
    def k(self) -> int:
        return int(self.minima_loss.shape[0])

    @property
    def m(self) -> int:
        return int(self.pairs.shape[0])

    @property
    def profiles(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per pair ``(t, loss)``, both ``(L_m,)``."""
        return list(zip(self.profile_t, self.profile_loss, strict=True))

    def image_losses(self) -> list[np.ndarray]:
        """Per path ``(n_m,)``: the loss at each image, read off the profile (which holds
        every image); NaN where an image's position is not on the profile."""
        out = []
        for chain, t, loss in zip(self.images, self.profile_t, self.profile_loss,
                                  strict=True):
            n = chain.shape[0]
            if self.method == "bezier":  # images at evenly spaced curve parameters
                at = np.linspace(0.0, 1.0, n)
            else:  # images at their normalised arc length along the chain
                seg = (chain[1:] - chain[:-1]).to(torch.float64).norm(dim=-1).numpy()
                cum = np.concatenate([[0.0], np.cumsum(seg)])
                at = cum / cum[-1] if cum[-1] > 0 else np.linspace(0.0, 1.0, n)
            idx = np.clip(np.searchsorted(t, at), 0, len(t) - 1)
            prev = np.clip(idx - 1, 0, len(t) - 1)
            idx = np.where(np.abs(t[prev] - at) < np.abs(t[idx] - at), prev, idx)
            hit = np.abs(t[idx] - at) <= 1e-6
            out.append(np.where(hit, loss[idx], np.nan).astype(np.float64))
        return out

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat numpy arrays for ``np.savez`` (ragged per-pair data concatenated, with
        ``*_offsets`` of shape ``(M + 1,)``); settings go to JSON separately."""
        def cat(parts: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
            offs = np.cumsum([0] + [len(p) for p in parts]).astype(np.int64)
            return np.concatenate([np.asarray(p) for p in parts]) if parts else np.zeros(0), offs

        img, img_off = cat([t.numpy() for t in self.images])
        pt, prof_off = cat(self.profile_t)
        pl, _ = cat(self.profile_loss)
        hist, hist_off = cat(self.barrier_history)
        hist_steps, _ = cat(self.history_steps)
        return {
            "pairs": self.pairs, "images": img, "image_offsets": img_off, "profile_t": pt,
            "profile_loss": pl, "profile_offsets": prof_off, "barriers": self.barriers,
            "linear_barriers": self.linear_barriers, "fallback": self.fallback,
            "role": self.role.astype(str), "minima_loss": self.minima_loss,
            "method": np.asarray(self.method), "converged": self.converged,
            "steps_used": self.steps_used, "barrier_history": hist,
            "history_offsets": hist_off, "perp_grad_norm": self.perp_grad_norm,
            "history_steps": hist_steps, "stalled": self.stalled,
            "top_grad_norm": self.top_grad_norm, "start": self.start.astype(str),
        }

    @classmethod
    def concat(cls, parts: Sequence[Paths]) -> Paths:
        """The paths of ``parts`` (same minima and method) as one :class:`Paths`; the
        settings are the first part's."""
        first = parts[0]
        return cls(
            pairs=np.concatenate([p.pairs for p in parts]).reshape(-1, 2),
            images=tuple(t for p in parts for t in p.images),
            profile_t=tuple(t for p in parts for t in p.profile_t),
            profile_loss=tuple(t for p in parts for t in p.profile_loss),
            barriers=np.concatenate([p.barriers for p in parts]),
            linear_barriers=np.concatenate([p.linear_barriers for p in parts]),
            fallback=np.concatenate([p.fallback for p in parts]),
            role=np.concatenate([p.role for p in parts]),
            minima_loss=first.minima_loss, method=first.method, settings=first.settings,
            converged=np.concatenate([p.converged for p in parts]),
            steps_used=np.concatenate([p.steps_used for p in parts]),
            barrier_history=tuple(h for p in parts for h in p.barrier_history),
            perp_grad_norm=np.concatenate([p.perp_grad_norm for p in parts]),
            history_steps=tuple(h for p in parts for h in p.history_steps),
            stalled=np.concatenate([p.stalled for p in parts]),
            top_grad_norm=np.concatenate([p.top_grad_norm for p in parts]),
            start=np.concatenate([p.start for p in parts]),
        )

    @classmethod
    def from_arrays(cls, a: Any, settings: dict[str, Any] | None = None) -> Paths:
        """Inverse of :meth:`to_arrays`; ``ValueError`` for arrays that do not fit together
        or lack a field (paths of an older path algorithm are recomputed, not read)."""
        settings = dict(settings or {})
        try:
            io, po = np.asarray(a["image_offsets"]), np.asarray(a["profile_offsets"])
            img, pt, pl = np.asarray(a["images"]), np.asarray(a["profile_t"]), np.asarray(
                a["profile_loss"])
            m = len(io) - 1
            _check_arrays(a, io, po, img, pt, pl)
            ho, hist = np.asarray(a["history_offsets"]), np.asarray(a["barrier_history"])
            if ho.shape != (m + 1,) or (m and (ho[0] != 0 or ho[-1] != len(hist)
                                               or np.any(np.diff(ho) < 0))):
                raise ValueError("barrier_history and its offsets disagree with the pairs")
            hsteps = np.asarray(a["history_steps"], dtype=np.int64)
            if hsteps.shape != hist.shape:
                raise ValueError("history_steps and barrier_history disagree")
            return cls(
                pairs=np.asarray(a["pairs"], dtype=np.int64).reshape(-1, 2),
                images=tuple(torch.as_tensor(img[io[i] : io[i + 1]]) for i in range(m)),
                profile_t=tuple(pt[po[i] : po[i + 1]] for i in range(m)),
                profile_loss=tuple(pl[po[i] : po[i + 1]] for i in range(m)),
                barriers=np.asarray(a["barriers"], dtype=np.float64),
                linear_barriers=np.asarray(a["linear_barriers"], dtype=np.float64),
                fallback=np.asarray(a["fallback"], dtype=bool),
                role=np.asarray(a["role"]).astype(str),
                minima_loss=np.asarray(a["minima_loss"], dtype=np.float64),
                method=str(a["method"]),
                settings=settings,
                converged=np.asarray(a["converged"], dtype=bool),
                steps_used=np.asarray(a["steps_used"], dtype=np.int64),
                barrier_history=tuple(hist[ho[i] : ho[i + 1]].astype(np.float64)
                                      for i in range(m)),
                perp_grad_norm=np.asarray(a["perp_grad_norm"], dtype=np.float64),
                history_steps=tuple(hsteps[ho[i] : ho[i + 1]] for i in range(m)),
                stalled=np.asarray(a["stalled"], dtype=bool),
                top_grad_norm=np.asarray(a["top_grad_norm"], dtype=np.float64),
                start=np.asarray(a["start"]).astype(str),
            )
        except KeyError as exc:
            raise ValueError(f"paths arrays lack field {exc}: made by an older lossbarcode "
                             "(recompute them) or not by Paths.to_arrays") from exc


def _check_arrays(a: Any, io: np.ndarray, po: np.ndarray, img: np.ndarray, pt: np.ndarray,
                  pl: np.ndarray) -> None:
    """``ValueError`` unless stored path arrays fit together: (M, 2) pairs ``i < j`` of the K
    minima, offsets that cut the images and profiles into M pieces, finite (n, P) images."""
    pairs, k = np.asarray(a["pairs"]), np.asarray(a["minima_loss"]).shape
    if len(k) != 1:
        raise ValueError(f"minima_loss must have shape (K,), got {k}")
    for name, off, total in (("image_offsets", io, len(img)), ("profile_offsets", po, len(pt))):
        if (off.ndim != 1 or len(off) < 1 or not np.issubdtype(off.dtype, np.integer)
                or off[0] != 0 or off[-1] != total or np.any(np.diff(off) < 0)):
            raise ValueError(f"{name} must rise from 0 to {total}")
    m = len(io) - 1
    if (not np.issubdtype(pairs.dtype, np.integer) or pairs.shape != (m, 2)
            or (m and (pairs.min() < 0 or pairs.max() >= k[0]
                       or np.any(pairs[:, 0] >= pairs[:, 1])))):
        raise ValueError(f"pairs must be {m} integer pairs i < j of the {k[0]} minima, got "
                         f"shape {pairs.shape}")
    if len(po) != m + 1 or pl.shape != pt.shape:
        raise ValueError("profile_t, profile_loss and profile_offsets disagree")
    if m and (img.ndim != 2 or np.any(np.diff(io) < 2)):
        raise ValueError(f"images must be (n, P) chains of at least 2, got shape {img.shape}")
    if not np.all(np.isfinite(img)):
        raise ValueError("path images hold NaN or infinite parameters")
    for name in ("barriers", "linear_barriers", "fallback", "role", "converged", "steps_used",
                 "perp_grad_norm", "stalled", "top_grad_norm", "start"):
        if np.asarray(a[name]).shape != (m,):
            raise ValueError(f"{name} must have shape ({m},), got {np.asarray(a[name]).shape}")
    if np.any(np.asarray(a["converged"], dtype=bool) & np.asarray(a["stalled"], dtype=bool)):
        raise ValueError("a path cannot be both converged and stalled")
    if m:
        bars, ends = np.asarray(a["barriers"], dtype=np.float64), np.asarray(
            a["minima_loss"], dtype=np.float64)[pairs].max(axis=1)
        if np.any(np.isnan(bars)) or not np.all(bars >= ends):
            raise ValueError("path barriers must be numbers at or above their higher endpoint's "
                             "loss (inf: not connected)")


# ------------------------------------------------------------------------------ public API


def connect(
    landscape: Landscape,
    minima: Minima,
    pairs: str | Sequence[tuple[int, int]] = PAIRING,
    method: str = PATH_METHOD,
    images: int = PATH_IMAGES,
    steps: int | None = None,
    lr: float | None = None,
    eval_points: int = PATH_EVAL_POINTS,
    seed: int = 0,
    progress: Progress | None = None,
    *,
    tol: float = PATH_TOL,
    atol: float = PATH_ATOL,
    grad_tol: float = MINIMA_TOL,
    restarts: int = PATH_RESTARTS,
    max_steps: int = PATH_MAX_STEPS,
    final_steps: int = PATH_FINAL_STEPS,
    cycle_steps: int = PATH_CYCLE_STEPS,
    climb: bool = True,
    optimizer: str | None = None,
    batch_size: int | None = PATH_BATCH_SIZE,
    spring: float = 0.5,
    cycles: int = NEB_CYCLES,
    insert: int = NEB_INSERT,
    t_samples: int = BEZIER_T_SAMPLES,
    screen_points: int = SCREEN_POINTS,
) -> Paths:
    """Connect pairs of minima with low-loss paths and measure their barriers.

    Args:
        landscape: the loss (the one the minima were trained on).
        minima: result of :func:`~lossbarcode.minima.find_minima`; diverged ones are skipped.
        pairs: ``"all"``, ``"mst"`` (the spanning tree first, then only the pairs that could
            undercut their route; see module docstring) or a list of ``(i, j)`` index pairs.
        method: ``"linear"``, ``"neb"`` or ``"bezier"``.
        images: interior images per path at the start (NEB grows it by ``insert`` in each of
            its first two cycles; for linear/Bezier it sets the resolution of the chain).
        steps: ``None`` (default): optimise every path until it converges (see "Stopping"
            in the module docstring). An integer: a fixed budget of that many steps at a
            constant step size, no final phase, no restarts (the algorithm of
            ``PATHS_VERSION`` 1, kept as a baseline); such paths are never converged.
        lr: (initial) step size; default 0.05 for SGD, 0.01 for Adam.
        eval_points: interpolated evaluation points between neighbouring images.
        seed: seeds the minibatches, Bezier's random ``t`` and the bent restarts.
        progress: called as ``progress(step, total, info)``; ``info`` has ``"stage"``
            (``"screen"``, ``"all"``/``"list"``/``"tree"``/``"shortcut"``/``"restart"``,
            ``"profile"``) and, while optimising, ``"mean_loss"`` and ``"active"`` (paths
            still running).
        tol, atol: the stopping rule: a path converges when a cycle lowers its barrier by at
            most ``tol * segment + atol`` (``segment`` = barrier - the higher endpoint loss).
        grad_tol: NEB's full-batch phase also needs the full-batch gradient norm at the top
            of the path at most this (a critical point), unless the path is monotone.
        restarts: starts per deciding pair (1: the straight line only).
        max_steps: minibatch steps per path at most; final_steps: full-batch steps at most.
        cycle_steps: steps between two convergence checks.
        climb: NEB's final phase moves the highest image up along the path (climbing image).
        optimizer: ``"sgd"`` (momentum 0.9) or ``"adam"``, batched with per-image state;
            default :data:`~lossbarcode.choices.PATH_OPTIMIZER` of the method.
        batch_size: training examples per minibatch step (``None``: the whole evaluation
            set).
        spring: NEB spacing relaxation in [0, 1] (0 = none, 1 = jump to the midpoint) at the
            initial step size; it shrinks with the step size.
        cycles: fixed budget only: AutoNEB cycles the steps are split into.
        insert: AutoNEB images inserted per pair after each of the first two cycles.
        t_samples: Bezier curve points per pair per step.
        screen_points: ``"mst"`` only: points per straight segment when ranking all pairs.

    Returns:
        :class:`Paths`, one row per optimised path (a restarted pair has several).
        Raises ``ValueError`` for an unknown method/pairing, bad indices, pairs involving
        diverged minima, fewer than two usable minima, or a bad setting.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "string" and (steps is not None or lr is not None or optimizer is not None):
        raise ValueError("the string method chooses its own step size and stops on its rule: "
                         "drop steps, lr and optimizer")
    if optimizer is None:
        optimizer = PATH_OPTIMIZER[method]
    if optimizer not in PATH_LR:
        raise ValueError(f"optimizer must be one of {tuple(PATH_LR)}, got {optimizer!r}")
    if steps is not None:
        steps = _check_int(steps, "steps", 0)
    if batch_size is not None:
        batch_size = _check_int(batch_size, "batch_size", 1)
    if not (isinstance(spring, int | float) and 0 <= spring <= 1):
        raise ValueError(f"spring must be a number in [0, 1], got {spring!r}")
    lr = PATH_LR[optimizer] if lr is None else lr
    check_positive(lr, "lr")
    check_positive(tol, "tol", "0.05: a cycle may lower the barrier by 5% of the segment")
    check_positive(atol, "atol", "1e-4 loss units")
    check_positive(grad_tol, "grad_tol", "1e-3")
    settings = _Settings(
        method=method, images=_check_int(images, "images", 1 if method == "neb" else 0),
        fixed_steps=steps, lr=float(lr), eval_points=_check_int(eval_points, "eval_points", 0),
        seed=_check_int(seed, "seed", 0), optimizer=optimizer, batch_size=batch_size,
        spring=float(spring), cycles=_check_int(cycles, "cycles", 1),
        insert=_check_int(insert, "insert", 0), t_samples=_check_int(t_samples, "t_samples", 1),
        tol=float(tol), atol=float(atol), grad_tol=float(grad_tol),
        restarts=_check_int(restarts, "restarts", 1),
        max_steps=_check_int(max_steps, "max_steps", 1),
        final_steps=_check_int(final_steps, "final_steps", 0),
        cycle_steps=_check_int(cycle_steps, "cycle_steps", 1), climb=bool(climb),
    )
    screen_points = _check_int(screen_points, "screen_points", 2)
    if isinstance(pairs, str) and pairs not in PAIRINGS:
        raise ValueError(f"pairs must be one of {PAIRINGS} or a list of (i, j), got {pairs!r}")
    if minima.n_params != landscape.n_params:
        raise ValueError(f"minima have P={minima.n_params} parameters but the landscape has "
                         f"P={landscape.n_params}; use the landscape the minima came from")
    valid = minima.valid
    if len(valid) < 2:
        raise ValueError(f"need at least 2 minima that did not diverge, got {len(valid)}; "
                         "train more minima or lower the learning rate")

    thetas = landscape.as_thetas(minima.thetas)
    losses = np.asarray(minima.train_loss, dtype=np.float64).copy()
    run = _Engine(land=landscape, thetas=thetas, minima_loss=losses, settings=settings,
                  progress=progress)

    if isinstance(pairs, str):
        candidates = np.array([(i, j) for a, i in enumerate(valid) for j in valid[a + 1 :]],
                              dtype=np.int64).reshape(-1, 2)
        role = "all" if pairs == "all" or len(valid) == 2 else "tree"
    else:
        candidates, role = _check_pairs(pairs, minima), "list"
    first = candidates
    if role == "tree":
        screen = run.linear_screen(candidates, screen_points)
        first = candidates[np.sort(planning.spanning_forest(minima.k, candidates, screen))]

    parts: list[Paths] = []

    def solve(prs: np.ndarray, stage: str) -> np.ndarray:
        parts.append(run.optimise(prs, stage))
        return parts[-1].barriers

    def restart(prs: np.ndarray) -> np.ndarray:
        done = Paths.concat(parts)
        # A pair NEB could not converge gets the independent string method as one of its
        # starts (in place of a bent NEB start): on narrow nets NEB caps far above the
        # saddle the string method reaches (bench convergence), and the lowest counts.
        cross = (~_pair_converged(done, prs) if method == "neb"
                 else np.zeros(len(prs), dtype=bool))
        before = len(parts)
        starts, kinds, rows = run.restart_starts(prs, done, settings.restarts - 1 - cross)
        if len(rows):
            parts.append(run.optimise(prs[rows], "restart", starts=starts, start_kind=kinds))
        if cross.any():
            parts.append(run.optimise(prs[cross], "restart", method="string",
                                      start_kind=np.full(int(cross.sum()), "string")))
        new = Paths.concat(parts[before:])
        best = planning.lowest_per_pair(new.pairs, new.barriers)
        return np.array([best[(int(i), int(j))] for i, j in prs])

    may_restart = (settings.restarts > 1 and method != "linear"
                   and settings.fixed_steps is None)
    planning.plan(losses, candidates, first,
                  solve=lambda prs: solve(prs, role if not parts else "shortcut"),
                  restart=restart if may_restart else None, atol=settings.atol)
    res = Paths.concat(parts)
    return replace(res, settings={
        **settings.to_dict(), "pairs": pairs if isinstance(pairs, str) else "list",
        "screen_points": screen_points,
    })


def barrier_matrix(paths: Paths, k: int | None = None) -> np.ndarray:
    """``(K, K)`` symmetric matrix of path barriers for the barcode.

    ``np.inf`` where no path was computed (and for diverged minima); when a pair has several
    paths the lowest barrier counts. The diagonal holds each minimum's own training loss (the
    lowest level at which it is in the sublevel set; ``np.inf`` for diverged minima)."""
    k = paths.k if k is None else int(k)
    if k < paths.k or (paths.m and int(paths.pairs.max()) >= k):
        raise ValueError(f"k={k} is smaller than the number of minima ({paths.k})")
    return pair_barrier_matrix(paths.pairs, paths.barriers, paths.minima_loss, k)


# ------------------------------------------------------------------------------ engine


@dataclass(frozen=True)
class _Settings:
    """Every knob of one :func:`connect` call (validated there)."""

    method: str
    images: int
    fixed_steps: int | None
    lr: float
    eval_points: int
    seed: int
    optimizer: str
    batch_size: int | None
    spring: float
    cycles: int
    insert: int
    t_samples: int
    tol: float
    atol: float
    grad_tol: float
    restarts: int
    max_steps: int
    final_steps: int
    cycle_steps: int
    climb: bool

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["steps"] = out.pop("fixed_steps")
        out["version"] = PATHS_VERSION if self.fixed_steps is None else 1
        return out


@dataclass
class _Track:
    """Per-path bookkeeping while optimising ``M`` paths: ``(M,)`` arrays and histories."""

    floor: np.ndarray  # the higher endpoint loss
    barrier: np.ndarray  # barrier estimate at the last accepted check
    lr: np.ndarray
    steps: np.ndarray
    converged: np.ndarray
    stalled: np.ndarray
    history: list[list[float]]
    calm: np.ndarray  # calm checks in a row (see check)
    history_steps: list[list[int]]

    @classmethod
    def start(cls, floor: np.ndarray, barrier: np.ndarray, lr: float) -> _Track:
        m = len(floor)
        return cls(floor, barrier.copy(), np.full(m, lr), np.zeros(m, dtype=np.int64),
                   np.zeros(m, dtype=bool), np.zeros(m, dtype=bool),
                   [[float(b)] for b in barrier], np.zeros(m, dtype=np.int64),
                   [[0] for _ in range(m)])

    def record(self, rows: Sequence[int] | np.ndarray) -> None:
        """Append the current barrier and step count of ``rows`` to their histories."""
        for i in rows:
            self.history[i].append(float(self.barrier[i]))
            self.history_steps[i].append(int(self.steps[i]))

    def check(self, act: np.ndarray, new: np.ndarray, s: _Settings, steps: int,
              critical: np.ndarray | None = None, base: float | None = None) -> np.ndarray:
        """One check of the paths ``act`` (rows) after a cycle; ``new`` their barriers now,
        ``critical`` (optional) whether each one's top is a critical point now.

        Keep the cycle where the barrier did not rise by more than ``atol``; undo it where it
        rose or is non-finite (the step size halves; below ``PATH_STALL`` of the first step
        size the path is stalled and stops). A kept cycle that moved the barrier by at most
        the tolerance (and whose top is critical, when asked) is calm; any other kept cycle
        resets the count and grows the step size by half. Two calm cycles (undone ones in
        between do not count), or a barrier within ``atol`` of the higher endpoint, and the
        path is converged. ``base``: the first step size, when not ``s.lr``; a phase that
        adapts its own step size (FIRE) passes it: the step size is not grown here and a
        rising barrier is kept (that phase judges the lowest chain it saw), only a non-finite
        one undone. Returns the bool mask over ``act`` of the cycles kept."""
        # A rise within atol (the resolution) is no rise: the top of a path moves by that much
        # with any small change of its images, so rejecting it would only stall.
        ok = np.isfinite(new) & ((new <= self.barrier[act] + s.atol) | (base is not None))
        keep = act[ok]
        delta = self.barrier[keep] - new[ok]
        self.barrier[keep] = new[ok]
        calm = self.quiet(keep, delta, s.tol, s.atol)
        if critical is not None:
            calm &= critical[ok]
        self.calm[keep] = np.where(calm, self.calm[keep] + 1, 0)
        if base is None:
            growing = keep[~calm]
            self.lr[growing] = np.minimum(self.lr[growing] * _GROW, s.lr * _MAX_GROWTH)
        self.lr[act[~ok]] *= _SHRINK
        self.steps[act] += steps
        self.record(act)
        # A barrier at its lower bound (the higher endpoint, within the resolution) cannot
        # fall further: the path is monotone and done, however noisy its last cycles were.
        done = (self.calm[act] >= _PATIENCE) | self.flat(s.atol)[act]
        self.stalled[act] = ~done & (self.lr[act] < (s.lr if base is None else base)
                                     * PATH_STALL)
        self.converged[act] = done
        return ok

    def quiet(self, rows: np.ndarray, delta: np.ndarray, tol: float, atol: float) -> np.ndarray:
        """Which of ``rows`` moved their barrier by at most the tolerance in the last check."""
        return np.abs(delta) <= tol * np.maximum(self.barrier[rows] - self.floor[rows], 0) + atol

    def flat(self, atol: float) -> np.ndarray:
        """``(M,)`` paths whose barrier is within ``atol`` of their higher endpoint: monotone
        up to the resolution, no saddle to resolve."""
        return self.barrier <= self.floor + atol


class _Engine:
    """One call of :func:`connect`: shared settings, data sampling and evaluation."""

    def __init__(self, *, land: Landscape, thetas: Tensor, minima_loss: np.ndarray,
                 settings: _Settings, progress: Progress | None):
        self.land, self.thetas, self.minima_loss = land, thetas, minima_loss
        self.s, self.progress = settings, progress

    # -- data
    def _batches(self, role: str) -> Callable[[], tuple[Tensor, Tensor]]:
        """Shared minibatch per step; each stage (role) has its own seeded stream."""
        land = self.land
        x_all, y_all = land.x_eval, land.y_eval
        n = x_all.shape[0]
        if self.s.batch_size is None or self.s.batch_size >= n:
            return lambda: (x_all, y_all)
        gen = torch.Generator().manual_seed(_stage_seed(self.s.seed, role))
        bs = self.s.batch_size
        state = {"perm": torch.empty(0, dtype=torch.long), "pos": n}  # shuffle first

        def draw() -> tuple[Tensor, Tensor]:
            if state["pos"] + bs > n:
                state["perm"] = torch.randperm(n, generator=gen).to(land.device)
                state["pos"] = 0
            sel = state["perm"][state["pos"] : state["pos"] + bs]
            state["pos"] += bs
            return x_all.index_select(0, sel), y_all.index_select(0, sel)

        return draw

    def _report(self, step: int, total: int, info: dict[str, Any]) -> None:
        if self.progress is not None:
            self.progress(step, total, info)

    # -- stages
    def linear_screen(self, pairs: np.ndarray, points: int) -> np.ndarray:
        """Linear barriers of ``pairs`` at ``points`` evenly spaced points, shape ``(M,)``."""
        self._report(0, 1, {"stage": "screen", "pairs": len(pairs)})
        a, c = self.thetas[pairs[:, 0]], self.thetas[pairs[:, 1]]
        f = torch.linspace(0, 1, points, device=a.device, dtype=a.dtype)
        vals = _evaluate_groups(self.land, len(pairs), points, lambda g: _lerp(
            a[g][:, None], c[g][:, None], f[None, :, None]))
        self._report(1, 1, {"stage": "screen", "pairs": len(pairs)})
        return vals.max(axis=1)

    def restart_starts(self, pairs: np.ndarray, done: Paths, counts: np.ndarray
                       ) -> tuple[Tensor | None, np.ndarray, np.ndarray]:
        """``counts[r]`` other starts for each of ``pairs`` ``(D, 2)``: the chain along the
        pair's best route through other minima (when one exists among the paths ``done``),
        then straight lines bent by a seeded random perpendicular offset. Returns the starts
        ``(N, n, P)`` (None when N = 0), their kinds ``(N,)`` and the row of ``pairs`` each
        belongs to ``(N,)``."""
        k = self.thetas.shape[0]
        n = self.s.images + 2
        f = torch.linspace(0, 1, n, device=self.thetas.device, dtype=self.thetas.dtype)
        starts, kinds, rows = [], [], []
        for r, (i, j) in enumerate(pairs.tolist()):
            a, c = self.thetas[i], self.thetas[j]
            route = planning.best_route(k, done.pairs, done.barriers, i, j)
            if route is not None and counts[r] > 0:
                starts.append(_resample(self._route_chain(route, done), n))
                kinds.append("route")
                rows.append(r)
            bent = 0
            while sum(1 for q in rows if q == r) < counts[r]:
                # Bends come in opposite pairs: both sides of the straight line get a start.
                gen = torch.Generator().manual_seed(_stage_seed(self.s.seed, "restart", _BENT_KEY,
                                                                i, j, bent // 2))
                d = torch.randn(a.shape[0], generator=gen, dtype=torch.float64).to(a)
                along = (c - a) / (c - a).norm().clamp_min(1e-30)
                d = d - (d @ along) * along
                d = d * ((-1) ** bent * _BEND * (c - a).norm() / d.norm().clamp_min(1e-30))
                bend = _lerp(a[None], c[None], f[:, None]) + torch.sin(math.pi * f)[:, None] * d
                bend[0], bend[-1] = a, c
                starts.append(bend)
                kinds.append("bent")
                rows.append(r)
                bent += 1
        return (torch.stack(starts) if starts else None, np.array(kinds, dtype=str),
                np.array(rows, dtype=np.int64))

    def _route_chain(self, route: list[int], done: Paths) -> Tensor:
        """The chain ``(L, P)`` along ``route`` (minima indices): each leg the lowest path
        of its pair among ``done``, oriented along the route."""
        best = planning.lowest_paths(done.pairs, done.barriers)
        legs = []
        for u, v in zip(route[:-1], route[1:], strict=True):
            chain = done.images[best[(min(u, v), max(u, v))]]
            legs.append(chain if u < v else chain.flip(0))
        joined = torch.cat([legs[0]] + [leg[1:] for leg in legs[1:]])
        return joined.to(self.thetas.device, self.thetas.dtype)

    def optimise(self, pairs: np.ndarray, role: str, starts: Tensor | None = None,
                 start_kind: np.ndarray | None = None, method: str | None = None) -> Paths:
        """Optimised paths for ``pairs`` (from the straight line, or from ``starts`` ``(M,
        n, P)`` of kinds ``start_kind``) by ``method`` (default: the run's), barriers clamped
        to the endpoints, no settings."""
        s = self.s
        a, c = self.thetas[pairs[:, 0]], self.thetas[pairs[:, 1]]
        floor = np.maximum(self.minima_loss[pairs[:, 0]], self.minima_loss[pairs[:, 1]])
        n_img = s.images + 2
        lin_chain = _lerp(a[:, None], c[:, None], torch.linspace(
            0, 1, n_img, device=a.device, dtype=a.dtype)[None, :, None])  # (M, n, P)
        lin_chain[:, -1] = c  # a + 1 * (c - a) is c only up to round-off
        lin_t, lin_loss = self._chain_profile(lin_chain)
        lin_bar = lin_loss.max(axis=1)
        m = len(pairs)
        if (method or s.method) == "string":
            return self._string(pairs, role, starts, start_kind, floor,
                                (lin_chain, lin_t, lin_loss, lin_bar))
        start = lin_chain if starts is None else starts
        track = _Track.start(floor, np.maximum(self._chain_profile(start, report=False)[1].max(
            axis=1), floor) if starts is not None else lin_bar, s.lr)
        if s.method == "linear" or s.fixed_steps == 0:
            chain = lin_chain
            track.converged[:] = s.method == "linear"  # the straight line is exact as it is
            profile = (lin_t, lin_loss)
            top = self._chain_top(lin_chain, *profile)
        elif s.method == "neb":
            chain = self._neb(start, role, track)
            *profile, top = self._chain_profile(chain, with_top=True)
        else:
            bend = self._bezier(a, c, role, track, _bend_through(a, c, start))
            t_img = torch.linspace(0, 1, n_img, device=a.device, dtype=a.dtype)
            chain = _bezier_points(a, bend, c, t_img)
            *profile, top = self._bezier_profile(a, bend, c, with_top=True)
        prof_t, prof_loss = profile
        bar = prof_loss.max(axis=1)
        fallback = bar > lin_bar
        top_grad = self._grad_norms(top)
        if fallback.any():
            lin_top = self._chain_top(lin_chain, lin_t, lin_loss)
            top_grad = np.where(fallback, self._grad_norms(lin_top), top_grad)
        imgs, pts, pls = [], [], []
        for i in range(m):
            use_lin = bool(fallback[i])
            imgs.append((lin_chain[i] if use_lin else chain[i]).detach().cpu())
            pts.append(lin_t[i] if use_lin else prof_t[i])
            pls.append(lin_loss[i] if use_lin else prof_loss[i])
        # A path contains its endpoints: the clamp only absorbs round-off below them.
        return Paths(
            pairs=pairs, images=tuple(imgs), profile_t=tuple(pts), profile_loss=tuple(pls),
            barriers=np.maximum(np.minimum(bar, lin_bar), floor),
            linear_barriers=np.maximum(lin_bar, floor), fallback=fallback,
            role=np.full(m, role), minima_loss=self.minima_loss, method=s.method,
            settings={}, converged=track.converged & ~track.stalled,
            steps_used=track.steps.copy(),
            barrier_history=tuple(np.asarray(h) for h in track.history),
            history_steps=tuple(np.asarray(h, dtype=np.int64) for h in track.history_steps),
            perp_grad_norm=np.where(fallback, self._perp_grad_norm(lin_chain, fallback),
                                    self._perp_grad_norm(chain, ~fallback)),
            stalled=track.stalled.copy(), top_grad_norm=top_grad,
            start=np.full(m, "line") if start_kind is None else np.asarray(start_kind),
        )

    def _string(self, pairs: np.ndarray, role: str, starts: Tensor | None,
                start_kind: np.ndarray | None, floor: np.ndarray,
                line: tuple[Tensor, np.ndarray, np.ndarray, np.ndarray]) -> Paths:
        """The paths of ``pairs`` by the string method (:mod:`lossbarcode.string_method`, an
        independent minimum-energy-path method sharing only the landscape), as rows of
        :class:`Paths`; ``line``: the straight chains, their profiles and barriers."""
        from lossbarcode.string_method import CHECK_EVERY, string_paths

        s = self.s
        lin_chain, lin_t, lin_loss, lin_bar = line
        a, c = self.thetas[pairs[:, 0]], self.thetas[pairs[:, 1]]
        self._report(0, 1, {"stage": role, "method": "string", "active": len(pairs)})
        # As NEB's cross-check it gets NEB's whole budget (minibatch and full-batch steps).
        max_steps = s.max_steps + (s.final_steps if s.method != "string" else 0)
        found = string_paths(self.land, a, c, images=s.images, start=starts, tol=s.tol,
                             atol=s.atol, grad_tol=s.grad_tol, max_steps=max_steps,
                             climb=s.climb)
        self._report(1, 1, {"stage": role, "method": "string", "active": 0})
        fallback = found.barriers > lin_bar
        lin_top = self._grad_norms(self._chain_top(lin_chain, lin_t, lin_loss))
        chains = [lin_chain[i].detach().cpu() if fallback[i] else found.chains[i]
                  for i in range(len(pairs))]
        perp = np.array([self._perp_grad_norm(ch.to(self.thetas)[None],
                                              np.ones(1, dtype=bool))[0] for ch in chains])
        start_bar = lin_bar if starts is None else self._chain_barrier(starts, floor)
        history = tuple(np.concatenate([[b], h]) for b, h in zip(start_bar, found.history,
                                                                  strict=True))
        return Paths(
            pairs=pairs, images=tuple(chains),
            profile_t=tuple(lin_t[i] if fallback[i] else found.profile_t[i]
                            for i in range(len(pairs))),
            profile_loss=tuple(lin_loss[i] if fallback[i] else found.profile_loss[i]
                               for i in range(len(pairs))),
            barriers=np.maximum(np.minimum(found.barriers, lin_bar), floor),
            linear_barriers=np.maximum(lin_bar, floor), fallback=fallback,
            role=np.full(len(pairs), role), minima_loss=self.minima_loss, method="string",
            settings={}, converged=found.converged.copy(), steps_used=found.steps.copy(),
            barrier_history=history,
            history_steps=tuple(np.minimum(np.arange(len(h)) * CHECK_EVERY, n).astype(np.int64)
                                for h, n in zip(history, found.steps, strict=True)),
            perp_grad_norm=perp, stalled=found.stalled.copy(),
            top_grad_norm=np.where(fallback, lin_top, found.top_grad_norm),
            start=np.full(len(pairs), "line") if start_kind is None else np.asarray(start_kind),
        )

    # -- NEB
    def _neb(self, chain: Tensor, role: str, track: _Track) -> Tensor:
        """Nudged elastic band on ``(M, n, P)`` chains with AutoNEB insertion: minibatch
        cycles until the barriers are steady, then full-batch cycles with a climbing image
        until the barrier is steady and the top is a critical point. A path is converged when
        the full-batch phase met its rule before its cap (or, for a path monotone after the
        minibatch phase, when that phase did)."""
        s = self.s
        if s.fixed_steps is not None:
            return self._neb_fixed(chain, role, track)
        cap = np.full(len(chain), s.max_steps)
        chain = self._neb_cycles(chain, role, track, self._batches(role), s.cycle_steps, cap,
                                 climb=False, insert=s.insert, phase=0)
        if s.final_steps == 0:
            return chain
        # The minibatch phase's checks read dense samples only: measure its result as the
        # full-batch phase will, before deciding which paths are monotone. A path whose top
        # is within atol of its higher endpoint has no saddle to resolve: it skips that phase.
        track.barrier = self._chain_barrier(chain, track.floor, _CHECK_GOLDEN_STEPS)
        flat = track.flat(s.atol)
        first = track.converged.copy()
        # The full-batch phase is a new, noise-free problem: every path starts it afresh.
        track.stalled[:] = False
        track.converged[:] = False
        track.calm[:] = 0
        cap = np.where(flat, track.steps, track.steps + s.final_steps)
        chain = self._fire_cycles(chain, role, track, cap)
        track.converged |= flat & first
        return chain

    def _neb_fixed(self, chain: Tensor, role: str, track: _Track) -> Tensor:
        """The fixed-budget baseline: ``steps`` at a constant step size in ``cycles`` parts."""
        s, draw = self.s, self._batches(role)
        steps = int(s.fixed_steps or 0)
        bounds = np.linspace(0, steps, s.cycles + 1).round().astype(int)
        chain = chain.clone()
        lr = torch.full((chain.shape[0], 1, 1), s.lr, dtype=chain.dtype, device=chain.device)
        for cyc in range(s.cycles):
            self._neb_steps(chain, lr, draw, bounds[cyc + 1] - bounds[cyc], role,
                            (bounds[cyc], steps), climb=False)
            track.steps += bounds[cyc + 1] - bounds[cyc]
            track.barrier = self._chain_barrier(chain, track.floor)
            track.record(range(len(chain)))
            if cyc < s.cycles - 1 and s.insert > 0:
                chain, _ = self._insert(chain)
        return chain

    def _neb_cycles(self, chain: Tensor, role: str, track: _Track,
                    draw: Callable[[], tuple[Tensor, Tensor]], cycle_steps: int,
                    cap: np.ndarray, *, climb: bool, insert: int, phase: int) -> Tensor:
        """NEB in checked cycles (:meth:`_cycles`) of ``cycle_steps`` steps; ``insert`` images
        are added after each of the first two cycles. Progress is reported in finished paths:
        ``phase * M + finished`` of ``2 M``."""
        m = len(chain)

        def run(act: np.ndarray, sub: Tensor, lr: Tensor) -> tuple[Tensor, np.ndarray, None]:
            self._neb_steps(sub, lr.view(-1, 1, 1), draw, cycle_steps, role,
                            (phase * m + m - len(act), 2 * m), climb=climb, active=len(act),
                            count_steps=False)
            # Minibatch noise moves the top by more than a golden-section search would
            # resolve: this phase's checks read the dense samples only.
            return sub, self._chain_barrier(sub, track.floor[act], 0), None

        def refine(cycle: int, state: Tensor) -> Tensor:
            if cycle > 2 or insert == 0:
                return state
            state, mids = self._insert(state)
            track.barrier = np.maximum(track.barrier, mids)
            return state

        return self._cycles(chain.clone(), track, cycle_steps, cap, run, refine)

    def _fire_cycles(self, chain: Tensor, role: str, track: _Track, cap: np.ndarray) -> Tensor:
        """The full-batch phase: climbing-image NEB moved by FIRE (the fast inertial relaxation
        engine, the usual optimiser of NEB: it follows a force that is not the gradient of
        anything, and needs no line search), in checked cycles of ``_FINAL_CHECK`` steps. A
        cycle is calm only if the top of the path is a critical point (full-batch gradient
        norm at most ``grad_tol``). FIRE's time step ``dt`` (a gradient step of ``dt**2``)
        starts at ``sqrt(lr)`` and is the step size the stall floor watches.

        The climbing image must be the top of the path, but a polygon's top often lies between
        two low images (a straight segment across a ridge): after a check that finds a path's
        top between images, higher than every image, a new image is put there (every chain
        gets one, so they stay one tensor: elsewhere on the longest segment, which changes no
        path), up to ``NEB_TOP_INSERTS`` images."""
        m, n, p = chain.shape
        dt0 = math.sqrt(self.s.lr)
        track.lr[:] = dt0
        opt: dict[str, Any] = {"vel": torch.zeros(m, n - 2, p, dtype=chain.dtype,
                                                  device=chain.device),
                               "alpha": np.full(m, _FIRE_ALPHA),
                               "npos": np.zeros(m, dtype=np.int64), "inserted": 0}
        # NEB does not lower the top of its polygon at every step (the images rearrange, and
        # a climbing image can swap between two saddles of one height): each path keeps the
        # lowest chain it passed through, and its checks judge that chain -- converged when
        # it has not been undercut for two checks and its top is a critical point.
        best = {"bar": track.barrier.copy(), "chains": [c.clone() for c in chain],
                "critical": self._grad_norms(self._chain_profile(
                    chain, report=False, with_top=True)[2]) <= self.s.grad_tol}
        pending: dict[str, Any] = {}

        def run(act: np.ndarray, sub: Tensor, dt: Tensor
                ) -> tuple[Tensor, np.ndarray, np.ndarray]:
            v = opt["vel"][torch.as_tensor(act, device=chain.device)]
            pending.update(zip(("dt", "alpha", "npos"), self._fire_steps(
                sub, v, dt.to(torch.float64).cpu().numpy(), opt["alpha"][act],
                opt["npos"][act], dt0, role, (m + m - len(act), 2 * m)), strict=True), vel=v)
            u, vals = self._chain_samples(sub, _CHECK_GOLDEN_STEPS)
            top = np.argmax(vals, axis=1)
            top_u = u[np.arange(len(act)), top]
            pts = self._chain_points(sub)(np.arange(len(act)), top_u[:, None])[:, 0]
            on_image = np.isclose(u, np.round(u), atol=1e-9)
            image_top = np.where(on_image, vals, -np.inf).max(axis=1)
            between = (np.abs(top_u - np.round(top_u)) > 1e-3) & (
                vals.max(axis=1) > image_top + self.s.atol)
            bar = np.maximum(vals.max(axis=1), track.floor[act])
            critical = self._grad_norms(pts) <= self.s.grad_tol
            for r in np.flatnonzero(bar <= best["bar"][act]):  # the latest of equals
                best["bar"][act[r]], best["chains"][act[r]] = bar[r], sub[r].clone()
                best["critical"][act[r]] = critical[r]
            pending.update(act=act, top_u=top_u, top_pts=pts, between=between)
            return sub, best["bar"][act], best["critical"][act]

        def commit(act: np.ndarray, ok: np.ndarray) -> None:
            keep, back = act[ok], act[~ok]
            vel = opt["vel"]
            vel[torch.as_tensor(keep, device=vel.device)] = pending["vel"][torch.as_tensor(
                np.flatnonzero(ok), device=vel.device)]
            opt["alpha"][keep], opt["npos"][keep] = pending["alpha"][ok], pending["npos"][ok]
            track.lr[keep] = pending["dt"][ok]
            # An undone (non-finite) cycle: FIRE's answer is to stop and start again slowly.
            vel[torch.as_tensor(back, device=vel.device)] = 0.0
            opt["alpha"][back], opt["npos"][back] = _FIRE_ALPHA, 0
            track.stalled[keep] = ~track.converged[keep] & (track.lr[keep] < dt0 * PATH_STALL)
            pending["between"] = pending["between"] & ok  # a kept chain's top, between images

        def insert_tops(cycle: int, state: Tensor) -> Tensor:
            if opt["inserted"] >= NEB_TOP_INSERTS or not pending.get("between", np.zeros(
                    0, dtype=bool)).any():
                return state
            opt["inserted"] += 1
            rows, k = pending["act"][pending["between"]], state.shape[1]
            seg_len = (state[:, 1:] - state[:, :-1]).norm(dim=-1)
            seg = seg_len.argmax(dim=1).cpu().numpy()
            new = 0.5 * (state[np.arange(m), seg] + state[np.arange(m), seg + 1])
            seg[rows] = np.minimum(np.floor(pending["top_u"][pending["between"]]), k - 2)
            new[torch.as_tensor(rows, device=state.device)] = pending["top_pts"][
                torch.as_tensor(np.flatnonzero(pending["between"]), device=state.device)]
            state = torch.stack([torch.cat([state[i, : seg[i] + 1], new[i : i + 1],
                                            state[i, seg[i] + 1 :]]) for i in range(m)])
            opt["vel"] = torch.zeros(m, k - 1, p, dtype=state.dtype, device=state.device)
            opt["alpha"][:], opt["npos"][:] = _FIRE_ALPHA, 0
            return state

        state = self._cycles(chain.clone(), track, _FINAL_CHECK, cap, run, insert_tops,
                             base=dt0, commit=commit)
        n_final = max(state.shape[1], max(c.shape[0] for c in best["chains"]))
        return torch.stack([_pad_chain(c, n_final) for c in best["chains"]])

    def _fire_steps(self, chain: Tensor, vel: Tensor, dt: np.ndarray, alpha: np.ndarray,
                    npos: np.ndarray, dt0: float, role: str, done_total: tuple[int, int]
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``_FINAL_CHECK`` FIRE steps of climbing-image NEB on ``chain`` ``(M, n, P)`` and its
        velocities ``vel`` ``(M, n-2, P)``, both in place, on the evaluation set; ``dt``,
        ``alpha``, ``npos`` ``(M,)`` per path. Returns their new values."""
        s = self.s
        m, n, p = chain.shape
        x, y = self.land.x_eval, self.land.y_eval
        dev, dtype = chain.device, chain.dtype
        dt_t = torch.as_tensor(dt, device=dev, dtype=dtype)
        al_t = torch.as_tensor(alpha, device=dev, dtype=dtype)
        np_t = torch.as_tensor(npos, device=dev)
        for _ in range(_FINAL_CHECK):
            inner = chain[:, 1:-1].reshape(-1, p)
            loss, grad = self.land.evaluate_batch(inner, x, y, grad=True)
            assert grad is not None
            img_loss = loss.view(m, n - 2) if s.climb else None
            force, tau = _neb_force(chain, grad.view(m, n - 2, p), img_loss)
            force = torch.nan_to_num_(force, nan=0.0, posinf=0.0, neginf=0.0).neg_()
            up = torch.linalg.vecdot(force.flatten(1), vel.flatten(1)) > 0
            mix = (al_t * vel.flatten(1).norm(dim=1)
                   / force.flatten(1).norm(dim=1).clamp_min(1e-30)).view(m, 1, 1)
            vel.mul_((1 - al_t).view(m, 1, 1)).addcmul_(force, mix)
            vel.mul_(up.view(m, 1, 1).to(dtype))  # uphill: stop
            np_t = torch.where(up, np_t + 1, 0)
            grow = up & (np_t > _FIRE_N_MIN)
            dt_t = torch.where(grow, (dt_t * _FIRE_INC).clamp(max=dt0 * _FIRE_DT_MAX),
                               torch.where(up, dt_t, dt_t * _FIRE_DEC))
            al_t = torch.where(grow, al_t * _FIRE_F_ALPHA,
                               torch.where(up, al_t, torch.full_like(al_t, _FIRE_ALPHA)))
            vel.addcmul_(force, dt_t.view(m, 1, 1))
            chain[:, 1:-1].addcmul_(vel, dt_t.view(m, 1, 1))
            if s.spring > 0:
                strength = (s.spring * dt_t / dt0).clamp(max=s.spring).view(m, 1, 1)
                _spring(chain, tau, strength, None if img_loss is None
                        else img_loss.nan_to_num(nan=-math.inf).argmax(dim=1))
        self._report(done_total[0], done_total[1], {
            "stage": role, "method": s.method, "mean_loss": float(loss.mean()), "active": m})
        return (dt_t.to(torch.float64).cpu().numpy(), al_t.to(torch.float64).cpu().numpy(),
                np_t.cpu().numpy())

    def _cycles(self, state: Tensor, track: _Track, cycle_steps: int, cap: np.ndarray,
                run: Callable[[np.ndarray, Tensor, Tensor],
                              tuple[Tensor, np.ndarray, np.ndarray | None]],
                after: Callable[[int, Tensor], Tensor] | None = None,
                base: float | None = None,
                commit: Callable[[np.ndarray, np.ndarray], None] | None = None) -> Tensor:
        """Checked cycles on per-path states ``(M, ...)`` (NEB chains, Bezier bends) until
        each path is converged or stalled (:meth:`_Track.check`, with ``base``) or has used
        ``cap`` ``(M,)`` steps. ``run(rows, states, lr)`` runs one cycle of the still active
        paths and returns their new states, barriers and (or None) whether their tops are
        critical; a kept cycle's state replaces the old one, finished paths leave the batch.
        ``commit(rows, kept)`` keeps an optimiser's own state in step with that;
        ``after(cycle, state)`` may change every state after a cycle."""
        dev = state.device
        todo = track.steps < cap
        cycle = 0
        while todo.any():
            act = np.flatnonzero(todo)
            lr = torch.as_tensor(track.lr[act], dtype=state.dtype, device=dev)
            sub, new, critical = run(act, state.index_select(0, torch.as_tensor(act,
                                                                                device=dev)), lr)
            ok = track.check(act, new, self.s, cycle_steps, critical, base)
            state[torch.as_tensor(act[ok], device=dev)] = sub[torch.as_tensor(
                np.flatnonzero(ok), device=dev)]
            if commit is not None:
                commit(act, ok)
            todo &= ~track.converged & ~track.stalled & (track.steps < cap)
            cycle += 1
            if after is not None:
                state = after(cycle, state)
        return state

    def _neb_steps(self, chain: Tensor, lr: Tensor, draw: Callable[[], tuple[Tensor, Tensor]],
                   steps: int, role: str, done_total: tuple[int, int], *, climb: bool,
                   active: int = 0, count_steps: bool = True) -> None:
        """``steps`` NEB steps on ``chain`` ``(M, n, P)`` in place (data from ``draw``),
        momentum SGD or Adam, step size ``lr`` ``(M, 1, 1)``; with ``climb``, each chain's
        highest image climbs along the chain instead of relaxing. The spring relaxation
        shrinks with the step size (``lr`` over the initial one), so that no part of a move
        stays large when the step has become small. Progress is reported as ``done_total``,
        plus the steps taken here when ``count_steps``."""
        s = self.s
        m, n, p = chain.shape
        opt = BatchedOptimizer.create(s.optimizer, chain[:, 1:-1].reshape(-1, p), 0.9,
                                      (0.9, 0.999), 1e-8)
        lr_rows = lr.expand(m, n - 2, 1).reshape(-1, 1)
        strength = (s.spring * lr / s.lr).clamp(max=s.spring).view(m, 1, 1)
        done, total = done_total
        every = max(1, steps // 5)
        for step in range(steps):
            x, y = draw()
            inner = chain[:, 1:-1].reshape(-1, p)  # (M * (n-2), P), a copy
            loss, grad = self.land.evaluate_batch(inner, x, y, grad=True)
            assert grad is not None
            g = grad.view(m, n - 2, p)
            img_loss = loss.view(m, n - 2) if climb else None
            _, tau = _neb_force(chain, g, img_loss)  # g becomes the NEB force's negative
            torch.nan_to_num_(g, nan=0.0, posinf=0.0, neginf=0.0)
            chain[:, 1:-1] = opt.step(inner, grad, lr_rows).view(m, n - 2, p)
            if s.spring > 0:
                _spring(chain, tau, strength, None if img_loss is None
                        else img_loss.nan_to_num(nan=-math.inf).argmax(dim=1))
            if step % every == 0 or step == steps - 1:
                self._report(done + (step + 1 if count_steps else 0), total, {
                    "stage": role, "method": s.method, "mean_loss": float(loss.mean()),
                    "active": active or m})

    def _chain_barrier(self, chain: Tensor, floor: np.ndarray,
                       golden_steps: int = PATH_GOLDEN_STEPS) -> np.ndarray:
        """``(M,)`` barrier of chains ``(M, n, P)`` as it is reported (the top of the dense,
        maximised profile; at least ``floor``); ``inf`` where a loss is NaN."""
        return np.maximum(self._chain_samples(chain, golden_steps)[1].max(axis=1), floor)

    def _insert(self, chain: Tensor) -> tuple[Tensor, np.ndarray]:
        """AutoNEB refinement: new images at the midpoints of the ``insert`` segments per
        chain whose midpoint loss is highest (evaluation set). Also returns ``(M,)`` the
        highest inserted loss."""
        m, n, p = chain.shape
        mids = 0.5 * (chain[:, 1:] + chain[:, :-1])  # (M, n-1, P)
        vals = _evaluate_groups(self.land, m, n - 1, lambda g: mids[g])
        k = min(self.s.insert, n - 1)
        top = np.sort(np.argsort(-vals, axis=1, kind="stable")[:, :k], axis=1)  # segment ids
        out = []
        for i in range(m):
            parts, last = [], 0
            for s in top[i]:
                parts.append(chain[i, last : s + 1])
                parts.append(mids[i, s : s + 1])
                last = s + 1
            parts.append(chain[i, last:])
            out.append(torch.cat(parts))
        return torch.stack(out), np.take_along_axis(vals, top, axis=1).max(axis=1)

    # -- Bezier
    def _bezier(self, a: Tensor, c: Tensor, role: str, track: _Track, bend: Tensor) -> Tensor:
        """Train the bends ``(M, P)`` (starting at ``bend``) of quadratic Bezier curves on the
        expected loss: for a fixed budget, or in checked cycles as NEB's minibatch phase (undo
        a cycle that raised the barrier and halve the step; stop when the barrier is
        steady)."""
        s = self.s
        m, p = a.shape
        draw = self._batches(role)
        gen = torch.Generator().manual_seed(_stage_seed(s.seed, role, _BEZIER_T_KEY))

        def barrier(rows: np.ndarray, b: Tensor) -> np.ndarray:
            r = torch.as_tensor(rows, device=a.device)
            prof = self._bezier_profile(a[r], b, c[r], report=False)[1]
            return np.maximum(prof.max(axis=1), track.floor[rows])

        if s.fixed_steps is not None:
            lr = torch.full((m, 1), s.lr, dtype=a.dtype, device=a.device)
            bend = self._bezier_steps(a, c, bend, lr, draw, gen, s.fixed_steps, role)
            track.steps += s.fixed_steps
            track.barrier = barrier(np.arange(m), bend)
            track.record(range(m))
            return bend
        track.barrier = barrier(np.arange(m), bend)
        for i, b in enumerate(track.barrier):
            track.history[i] = [float(b)]

        def run(act: np.ndarray, sub: Tensor, lr: Tensor) -> tuple[Tensor, np.ndarray, None]:
            r = torch.as_tensor(act, device=a.device)
            sub = self._bezier_steps(a[r], c[r], sub, lr[:, None], draw, gen, s.cycle_steps,
                                     role)
            return sub, barrier(act, sub), None

        return self._cycles(bend.clone(), track, s.cycle_steps, np.full(m, s.max_steps), run)

    def _bezier_steps(self, a: Tensor, c: Tensor, bend: Tensor, lr: Tensor,
                      draw: Callable[[], tuple[Tensor, Tensor]], gen: torch.Generator,
                      steps: int, role: str) -> Tensor:
        """``steps`` minibatch steps on the bends ``(M, P)``; returns the new bends."""
        m, p = a.shape
        ns = self.s.t_samples
        opt = BatchedOptimizer.create(self.s.optimizer, bend, 0.9, (0.9, 0.999), 1e-8)
        every = max(1, steps // 5)
        for step in range(steps):
            x, y = draw()
            # Stratified t: one uniform draw in each of ns equal bins, per pair.
            u = torch.rand(m, ns, generator=gen, dtype=torch.float64)
            t = ((torch.arange(ns, dtype=torch.float64) + u) / ns).to(a.device, a.dtype)
            pts = _bezier_points(a, bend, c, t)  # (M, ns, P)
            loss, grad = self.land.evaluate_batch(pts.reshape(-1, p), x, y, grad=True)
            assert grad is not None
            w = (2 * t * (1 - t))[..., None]  # d point / d bend
            g = (w * grad.view(m, ns, p)).mean(dim=1)
            g = torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)
            bend = opt.step(bend, g, lr)
            if step % every == 0 or step == steps - 1:
                self._report(step + 1, steps, {"stage": role, "method": "bezier",
                                               "mean_loss": float(loss.mean()), "active": m})
        return bend

    # -- profiles and gradients
    def _grad_norms(self, points: Tensor) -> np.ndarray:
        """``(M,)`` full-batch (evaluation-set) gradient norms of the loss at ``points``
        ``(M, P)``; ``inf`` where not finite."""
        m = points.shape[0]
        out = np.empty(m)
        group = items_per_block(self.land, 1)
        for s0 in range(0, m, group):
            _, grad = self.land.evaluate_batch(points[s0 : s0 + group], self.land.x_eval,
                                               self.land.y_eval, grad=True)
            assert grad is not None
            out[s0 : s0 + group] = grad.to(torch.float64).norm(dim=1).cpu().numpy()
        return np.where(np.isfinite(out), out, np.inf)

    def _perp_grad_norm(self, chain: Tensor, which: np.ndarray) -> np.ndarray:
        """``(M,)`` largest norm, over the interior images of chains ``(M, n, P)``, of the
        evaluation-set loss gradient perpendicular to the chain (0 without interior images);
        computed for the rows in the bool mask ``which`` only (NaN elsewhere)."""
        m, n, p = chain.shape
        out = np.full(m, np.nan)
        rows = np.flatnonzero(which)
        if n <= 2:
            out[rows] = 0.0
            return out
        group = items_per_block(self.land, n)
        for s0 in range(0, len(rows), group):
            idx = rows[s0 : s0 + group]
            sub = chain[torch.as_tensor(idx, device=chain.device)]
            _, grad = self.land.evaluate_batch(sub[:, 1:-1].reshape(-1, p), self.land.x_eval,
                                               self.land.y_eval, grad=True)
            assert grad is not None
            g = grad.view(sub.shape[0], n - 2, p)
            _neb_force(sub, g, None)
            norms = g.norm(dim=-1).max(dim=1).values.to("cpu", torch.float64).numpy()
            out[idx] = np.where(np.isnan(norms), np.inf, norms)
        return out

    def _chain_points(self, chain: Tensor) -> Callable[[np.ndarray, np.ndarray], Tensor]:
        """``points(g, u)``: the points of chains ``g`` at chain coordinates ``u`` ``(g, L)``
        in ``[0, n - 1]`` (image ``i`` at ``u = i``), shape ``(g, L, P)``."""
        n = chain.shape[1]

        def points(g: np.ndarray, u: np.ndarray) -> Tensor:
            s = np.minimum(np.floor(u), n - 2).astype(np.int64)
            f = torch.as_tensor(u - s, device=chain.device, dtype=chain.dtype)[..., None]
            gi = torch.as_tensor(g, device=chain.device)[:, None]
            si = torch.as_tensor(s, device=chain.device)
            return _lerp(chain[gi, si], chain[gi, si + 1], f)

        return points

    def _chain_top(self, chain: Tensor, t: np.ndarray, vals: np.ndarray) -> Tensor:
        """``(M, P)``: the points of chains ``(M, n, P)`` at the top of their profiles ``t,
        vals`` ``(M, L)`` (``t`` normalised arc length)."""
        m, n, _ = chain.shape
        cum = _arc_lengths(chain)
        t_top = t[np.arange(m), np.argmax(vals, axis=1)]
        u = np.array([np.interp(t_top[i] * cum[i, -1], cum[i], np.arange(n))
                      if cum[i, -1] > 0 else 0.0 for i in range(m)])
        return self._chain_points(chain)(np.arange(m), u[:, None])[:, 0]

    def _chain_samples(self, chain: Tensor, golden_steps: int = PATH_GOLDEN_STEPS,
                       report: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The loss along polygonal chains ``(M, n, P)`` at chain coordinates ``u (M, L)``
        (image ``i`` at ``u = i``): ``eval_points`` points between neighbouring images, then
        each top maximised by a golden-section search (:meth:`_profile`); ``(u, loss)``."""
        n = chain.shape[1]
        return self._profile(chain.shape[0], np.linspace(
            0, n - 1, (n - 1) * (self.s.eval_points + 1) + 1), self._chain_points(chain), report,
            golden_steps)

    def _chain_profile(self, chain: Tensor, report: bool = True, with_top: bool = False
                       ) -> tuple[np.ndarray, ...]:
        """Dense loss along polygonal chains ``(M, n, P)`` (:meth:`_chain_samples`): ``t (M,
        L)`` (normalised arc length) and ``loss (M, L)``. With ``with_top``, also the points
        at the tops ``(M, P)``."""
        m, n, _ = chain.shape
        cum = _arc_lengths(chain)
        u, vals = self._chain_samples(chain, report=report)
        s = np.minimum(np.floor(u), n - 2).astype(np.int64)
        # A trial chain that blew up (inf parameters) has no arc length; its barrier is inf
        # and the cycle is undone, so its positions only need to be defined, not meaningful.
        with np.errstate(invalid="ignore", over="ignore"):
            pos = np.take_along_axis(cum, s, 1) + (u - s) * np.take_along_axis(
                np.diff(cum, axis=1), s, 1)
        total = cum[:, -1:]
        usable = np.isfinite(total) & (total > 0)
        t = np.where(usable, pos / np.where(usable, total, 1.0), u / (n - 1))
        if not with_top:
            return t, vals
        top_u = u[np.arange(m), np.argmax(vals, axis=1)]
        return t, vals, self._chain_points(chain)(np.arange(m), top_u[:, None])[:, 0]

    def _bezier_profile(self, a: Tensor, bend: Tensor, c: Tensor, report: bool = True,
                        with_top: bool = False) -> tuple[np.ndarray, ...]:
        length = (self.s.images + 1) * (self.s.eval_points + 1) + 1

        def points(g: np.ndarray, u: np.ndarray) -> Tensor:
            t = torch.as_tensor(u, device=a.device, dtype=a.dtype)
            return _bezier_points(a[g], bend[g], c[g], t)

        u, vals = self._profile(a.shape[0], np.linspace(0, 1, length), points, report)
        if not with_top:
            return u, vals
        m = a.shape[0]
        top_u = u[np.arange(m), np.argmax(vals, axis=1)]
        return u, vals, points(np.arange(m), top_u[:, None])[:, 0]

    def _profile(self, m: int, u0: np.ndarray, points: Callable[[np.ndarray, np.ndarray], Tensor],
                 report: bool, golden_steps: int = PATH_GOLDEN_STEPS
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Loss at path coordinates ``u0`` ``(L,)`` for ``m`` paths, then a golden-section
        search (``golden_steps`` steps) for the maximum between the neighbours of each path's
        ``PATH_GOLDEN_PEAKS`` highest local maxima, so the barrier is the top of the path, not
        of its samples:
        ``u (m, L')`` sorted, and ``loss (m, L')``."""
        u = np.broadcast_to(u0, (m, len(u0))).copy()
        if report:
            self._report(0, 1, {"stage": "profile", "points": m * len(u0)})
        vals = _evaluate_groups(self.land, m, u.shape[1], lambda g: points(g, u[g]))
        if u.shape[1] < 3 or m == 0 or golden_steps == 0:
            return u, vals
        lo, hi = _peak_brackets(u, vals, PATH_GOLDEN_PEAKS)  # (m, peaks)

        def at(x: np.ndarray) -> np.ndarray:
            return _evaluate_groups(self.land, m, x.shape[1], lambda g: points(g, x[g]))

        x1, x2 = hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo)
        f1, f2 = at(x1), at(x2)
        seen_u, seen_v = [u, x1, x2], [vals, f1, f2]
        for _ in range(golden_steps):
            left = f1 > f2  # the maximum lies in [lo, x2]
            hi, lo = np.where(left, x2, hi), np.where(left, lo, x1)
            x_new = np.where(left, hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo))
            f_new = at(x_new)
            x1, f1, x2, f2 = (np.where(left, x_new, x2), np.where(left, f_new, f2),
                              np.where(left, x1, x_new), np.where(left, f1, f_new))
            seen_u.append(x_new)
            seen_v.append(f_new)
        u, vals = np.concatenate(seen_u, axis=1), np.concatenate(seen_v, axis=1)
        order = np.argsort(u, axis=1, kind="stable")
        rows = np.arange(m)[:, None]
        return u[rows, order], vals[rows, order]


# ------------------------------------------------------------------------------ helpers


def _pair_converged(paths: Paths, pairs: np.ndarray) -> np.ndarray:
    """``(D,)`` bool: whether the lowest path of each of ``pairs`` ``(D, 2)`` among ``paths``
    (the one its death is read from) converged: neither capped nor stalled; False for a pair
    with no path."""
    finished = paths.converged & ~paths.stalled
    best = planning.lowest_paths(paths.pairs, paths.barriers, finished)
    return np.array([bool(finished[best[key]]) if (key := (min(i, j), max(i, j))) in best
                     else False for i, j in np.asarray(pairs).tolist()], dtype=bool)


def _stage_seed(seed: int, role: str, *keys: int) -> int:
    """The seed of stage ``role``'s random stream (``keys`` name a second stream of it):
    fixed by ``seed`` and the stage's key, whatever ran before (see ``_STAGE_KEY``)."""
    return derive_seed(seed, _STAGE_KEY[role], *keys)


def _neb_force(chain: Tensor, grad: Tensor, climb_loss: Tensor | None
               ) -> tuple[Tensor, Tensor]:
    """Turn ``grad`` ``(M, n-2, P)`` (loss gradients at the interior images of chains ``(M, n,
    P)``) into the NEB force's negative in place: the gradient with its component along the
    chain tangent removed -- or, with ``climb_loss`` ``(M, n-2)``, reversed at each chain's
    highest image (the climbing image). Returns it and the unit tangents ``(M, n-2, P)``."""
    # In-place arithmetic: with hundreds of images these (M, n, P) passes are memory-bound
    # and cost as much as the loss evaluation itself.
    tau = chain[:, 2:] - chain[:, :-2]  # central-difference tangent
    tau.div_(tau.norm(dim=-1, keepdim=True).clamp_min_(1e-12))
    along = torch.linalg.vecdot(grad, tau).unsqueeze(-1)
    if climb_loss is None:
        grad.addcmul_(tau, along, value=-1.0)
    else:
        top = torch.zeros_like(climb_loss, dtype=torch.bool)
        top.scatter_(1, climb_loss.argmax(dim=1, keepdim=True), True)
        grad.addcmul_(tau, along * torch.where(top, 2.0, 1.0).unsqueeze(-1).to(grad.dtype),
                      value=-1.0)
    return grad, tau


def _spring(chain: Tensor, tau: Tensor, strength: Tensor, climbing: Tensor | None) -> None:
    """Slide every interior image of ``chain`` ``(M, n, P)`` along its tangent towards the
    arc-length midpoint of its neighbours, in place, by ``strength`` ``(M, 1, 1)`` of the way
    (``climbing`` ``(M,)``: image indices among the interior ones that stay where they are)."""
    d = (chain[:, 1:] - chain[:, :-1]).norm(dim=-1, keepdim=True)
    shift = 0.5 * strength * (d[:, 1:] - d[:, :-1])
    if climbing is not None:
        shift.scatter_(1, climbing.view(-1, 1, 1), 0.0)
    chain[:, 1:-1].addcmul_(tau, shift)


def _arc_lengths(chain: Tensor) -> np.ndarray:
    """``(M, n)`` cumulative arc length along chains ``(M, n, P)`` (0 at the first image)."""
    seg = (chain[:, 1:] - chain[:, :-1]).to(torch.float64).norm(dim=-1)
    return torch.cat([torch.zeros(chain.shape[0], 1, dtype=torch.float64,
                                  device=chain.device), seg.cumsum(1)], dim=1).cpu().numpy()


def _resample(chain: Tensor, n: int) -> Tensor:
    """``n`` points ``(n, P)`` evenly spaced by arc length along the chain ``(L, P)``,
    the first and last kept exactly."""
    cum = _arc_lengths(chain[None])[0]
    if cum[-1] <= 0:
        return chain[:1].expand(n, -1).clone()
    want = np.linspace(0.0, cum[-1], n)
    seg = np.clip(np.searchsorted(cum, want, side="right") - 1, 0, len(cum) - 2)
    f = (want - cum[seg]) / np.maximum(cum[seg + 1] - cum[seg], 1e-300)
    s = torch.as_tensor(seg, device=chain.device)
    out = _lerp(chain[s], chain[s + 1], torch.as_tensor(f, device=chain.device,
                                                         dtype=chain.dtype)[:, None])
    out[0], out[-1] = chain[0], chain[-1]
    return out


def _pad_chain(chain: Tensor, n: int) -> Tensor:
    """The chain ``(L, P)`` with midpoints put on its longest segments until it has ``n >= L``
    points: the same polygon, so the same path."""
    while chain.shape[0] < n:
        i = int((chain[1:] - chain[:-1]).norm(dim=-1).argmax())
        chain = torch.cat([chain[: i + 1], 0.5 * (chain[i : i + 1] + chain[i + 1 : i + 2]),
                           chain[i + 1 :]])
    return chain


def _bend_through(a: Tensor, c: Tensor, start: Tensor) -> Tensor:
    """Bezier bends ``(M, P)`` whose curves pass, at ``t = 1/2``, through the arc-length
    midpoint of the chains ``start`` ``(M, n, P)`` (the midpoint of ``a``, ``c`` for a
    straight start)."""
    mids = torch.stack([_resample(chain, 3)[1] for chain in start])
    return 2 * mids - 0.5 * (a + c)


def _peak_brackets(u: np.ndarray, vals: np.ndarray, peaks: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Brackets ``(lo, hi)``, each ``(m, peaks)``, around the ``peaks`` highest local maxima
    of each row of the sampled profile ``vals`` at sorted positions ``u`` ``(m, L)``: the
    neighbouring samples' positions (the global top repeats where a row has fewer maxima)."""
    m, n = vals.shape
    pad = np.pad(vals, ((0, 0), (1, 1)), constant_values=-np.inf)
    is_peak = (vals >= pad[:, :-2]) & (vals >= pad[:, 2:])
    score = np.where(is_peak, vals, -np.inf)
    idx = np.argsort(-score, axis=1, kind="stable")[:, :peaks]
    top = np.argmax(vals, axis=1)[:, None]
    idx = np.where(np.take_along_axis(score, idx, 1) > -np.inf, idx, top)
    return (np.take_along_axis(u, np.maximum(idx - 1, 0), 1),
            np.take_along_axis(u, np.minimum(idx + 1, n - 1), 1))


def _lerp(a: Tensor, c: Tensor, f: Tensor) -> Tensor:
    return a + f * (c - a)


def _bezier_points(a: Tensor, bend: Tensor, c: Tensor, t: Tensor) -> Tensor:
    """Points ``(M, T, P)`` of quadratic Bezier curves with endpoints ``a, c`` and control
    ``bend`` (all ``(M, P)``) at ``t`` of shape ``(T,)`` or ``(M, T)``."""
    if t.dim() == 1:
        t = t[None]
    t = t[..., None]
    return (1 - t) ** 2 * a[:, None] + 2 * t * (1 - t) * bend[:, None] + t**2 * c[:, None]


def _evaluate_groups(land: Landscape, m: int, length: int,
                     make: Callable[[np.ndarray], Tensor]) -> np.ndarray:
    """Loss ``(m, length)`` of points made per group of items by ``make(indices)`` ->
    ``(g, length, P)``; groups are sized so the points stay under a memory cap."""
    group = items_per_block(land, length)
    out = np.empty((m, length))
    for s in range(0, m, group):
        g = np.arange(s, min(m, s + group))
        pts = make(g)
        out[g] = land.loss(pts.reshape(-1, land.n_params)).to("cpu", torch.float64).numpy(
            ).reshape(len(g), length)
    # A NaN loss on a path means the path is unusable: count it as an infinite barrier.
    return np.where(np.isnan(out), np.inf, out)


def _check_pairs(pairs: Any, minima: Minima) -> np.ndarray:
    try:
        arr = np.asarray(pairs)
    except (TypeError, ValueError) as exc:
        raise ValueError("pairs must be 'all', 'mst' or a list of (i, j) index pairs") from exc
    if arr.size == 0 or arr.ndim != 2 or arr.shape[1] != 2 or not np.issubdtype(
            arr.dtype, np.integer):
        raise ValueError(f"pairs must be 'all', 'mst' or a non-empty list of (i, j) integer "
                         f"pairs, got {pairs!r}")
    if arr.min() < 0 or arr.max() >= minima.k:
        raise ValueError(f"pair indices must lie in [0, {minima.k}), got {arr.tolist()}")
    if np.any(arr[:, 0] == arr[:, 1]):
        raise ValueError("a pair must join two different minima (i != j)")
    bad = sorted({int(v) for v in arr.ravel() if minima.diverged[v]})
    if bad:
        raise ValueError(f"minima {bad} diverged and cannot be connected; drop those pairs")
    arr = np.sort(arr.astype(np.int64), axis=1)
    _, first = np.unique(arr, axis=0, return_index=True)
    return arr[np.sort(first)]
