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

Pair planning: ``pairs="all"`` connects every pair of non-diverged minima; ``pairs="mst"``
computes cheap linear barriers for all pairs (at ``screen_points`` points each), optimises the
minimum spanning tree of that matrix first (the K-1 pairs that decide the barcode if the linear
ranking holds), then up to ``max_shortcuts`` non-tree pairs, chosen by how much their linear
barrier undercuts the highest barrier on their route through the optimised tree (a shortcut
changes the barcode only if its barrier ends up below that route maximum). Diverged minima are
never paired.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from scipy.sparse.csgraph import minimum_spanning_tree
from torch import Tensor

from lossbarcode._checks import check_int as _check_int
from lossbarcode._checks import check_positive
from lossbarcode.blocks import items_per_block
from lossbarcode.choices import (
    BEZIER_T_SAMPLES,
    NEB_CYCLES,
    NEB_INSERT,
    PAIRING,
    PAIRINGS,
    PATH_ATOL,
    PATH_BATCH_SIZE,
    PATH_CYCLE_STEPS,
    PATH_EVAL_POINTS,
    PATH_FINAL_STEPS,
    PATH_IMAGES,
    PATH_LR,
    PATH_MAX_STEPS,
    PATH_METHOD,
    PATH_METHODS,
    PATH_OPTIMIZER,
    PATH_REFINE_POINTS,
    PATH_REFINE_ROUNDS,
    PATH_TOL,
    PATHS_VERSION,
    SCREEN_POINTS,
)
from lossbarcode.landscape import Landscape
from lossbarcode.minima import BatchedOptimizer, Minima
from lossbarcode.planes import PlaneSlice as PlaneSlice  # kept for compatibility
from lossbarcode.planes import plane_slice as plane_slice  # kept for compatibility
from lossbarcode.seeds import derive_seed

METHODS = PATH_METHODS
DEFAULT_LR = PATH_LR  # kept for compatibility: the path step sizes, choices.PATH_LR
Progress = Callable[[int, int, dict[str, Any]], Any]
CYCLE_STEPS = PATH_CYCLE_STEPS  # kept for compatibility
_FINAL_CHECK = 10  # full-batch steps between two convergence checks
_GROW, _SHRINK, _MAX_GROWTH = 1.5, 0.5, 64.0  # step-size adaptation per cycle (bold driver)
_PATIENCE = 2  # calm checks in a row that make a path converged
# Each stage's random streams (its minibatches, Bezier's t) are seeded by (seed, the stage's
# fixed key), never by how many stages ran before, so a stage draws the same numbers whatever
# the order of the stages. The keys are part of every stored run's numbers: never change them.
_STAGE_KEY = {"all": 1, "list": 2, "tree": 3, "shortcut": 4}
_BEZIER_T_KEY = 7  # second key of Bezier's random-t stream (the first is the stage's)


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
        role: ``(M,)`` how the pair was chosen: "all", "list", "tree" or "shortcut".
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
            "history_steps": hist_steps,
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
        )

    @classmethod
    def from_arrays(cls, a: Any, settings: dict[str, Any] | None = None) -> Paths:
        """Inverse of :meth:`to_arrays`. Paths stored by the fixed-budget algorithm (version
        1) have no convergence diagnostics: they load as unconverged, history empty."""
        settings = dict(settings or {})
        try:
            io, po = np.asarray(a["image_offsets"]), np.asarray(a["profile_offsets"])
            img, pt, pl = np.asarray(a["images"]), np.asarray(a["profile_t"]), np.asarray(
                a["profile_loss"])
            m = len(io) - 1
            _check_arrays(a, io, po, img, pt, pl)
            pairs = np.asarray(a["pairs"], dtype=np.int64).reshape(-1, 2)
            if "converged" in a:
                ho, hist = np.asarray(a["history_offsets"]), np.asarray(a["barrier_history"])
                converged = np.asarray(a["converged"], dtype=bool)
                steps_used = np.asarray(a["steps_used"], dtype=np.int64)
                perp = np.asarray(a["perp_grad_norm"], dtype=np.float64)
                if (converged.shape != (m,) or steps_used.shape != (m,) or perp.shape != (m,)
                        or ho.shape != (m + 1,) or (m and (ho[0] != 0 or ho[-1] != len(hist)
                                                           or np.any(np.diff(ho) < 0)))):
                    raise ValueError("path diagnostics (converged, steps_used, "
                                     "perp_grad_norm, barrier_history) disagree with the pairs")
                history = tuple(hist[ho[i] : ho[i + 1]].astype(np.float64) for i in range(m))
                hsteps = (np.asarray(a["history_steps"], dtype=np.int64) if "history_steps" in a
                          else np.zeros(len(hist), dtype=np.int64))
                if hsteps.shape != hist.shape:
                    raise ValueError("history_steps and barrier_history disagree")
                history_steps = tuple(hsteps[ho[i] : ho[i + 1]] for i in range(m))
            else:
                converged = np.zeros(m, dtype=bool)
                steps_used = np.full(m, int(settings.get("steps") or 0), dtype=np.int64)
                history = tuple(np.zeros(0) for _ in range(m))
                history_steps = tuple(np.zeros(0, dtype=np.int64) for _ in range(m))
                perp = np.full(m, np.nan)
            return cls(
                pairs=pairs,
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
                converged=converged, steps_used=steps_used, barrier_history=history,
                perp_grad_norm=perp, history_steps=history_steps,
            )
        except KeyError as exc:
            raise ValueError(f"paths arrays lack field {exc}; were they written by "
                             "Paths.to_arrays?") from exc


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
    for name in ("barriers", "linear_barriers", "fallback", "role"):
        if np.asarray(a[name]).shape != (m,):
            raise ValueError(f"{name} must have shape ({m},), got {np.asarray(a[name]).shape}")


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
    max_shortcuts: int | None = None,
    screen_points: int = SCREEN_POINTS,
) -> Paths:
    """Connect pairs of minima with low-loss paths and measure their barriers.

    Args:
        landscape: the loss (the one the minima were trained on).
        minima: result of :func:`~lossbarcode.minima.find_minima`; diverged ones are skipped.
        pairs: ``"all"``, ``"mst"`` (tree first, then shortcuts; see module docstring) or a
            list of ``(i, j)`` index pairs.
        method: ``"linear"``, ``"neb"`` or ``"bezier"``.
        images: interior images per path at the start (NEB grows it by ``insert`` in each of
            its first two cycles; for linear/Bezier it sets the resolution of the chain).
        steps: ``None`` (default): optimise every path until it converges (see "Stopping"
            in the module docstring). An integer: a fixed budget of that many steps at a
            constant step size, no final phase (the algorithm of ``PATHS_VERSION`` 1, kept as
            a baseline); such paths are never reported as converged.
        lr: (initial) step size; default 0.05 for SGD, 0.01 for Adam.
        eval_points: interpolated evaluation points between neighbouring images.
        seed: seeds the minibatches and Bezier's random ``t``.
        progress: called as ``progress(step, total, info)``; ``info`` has ``"stage"``
            (``"screen"``, ``"all"``/``"list"``/``"tree"``/``"shortcut"``, ``"profile"``)
            and, while optimising, ``"mean_loss"`` and ``"active"`` (paths still running).
        tol, atol: the stopping rule: a path converges when a cycle lowers its barrier by at
            most ``tol * segment + atol`` (``segment`` = barrier - the higher endpoint loss).
        max_steps: minibatch steps per path at most; final_steps: full-batch steps at most.
        cycle_steps: steps between two convergence checks.
        climb: NEB's final phase moves the highest image up along the path (climbing image).
        optimizer: ``"sgd"`` (momentum 0.9) or ``"adam"``, batched with per-image state;
            default :data:`~lossbarcode.choices.PATH_OPTIMIZER` of the method.
        batch_size: training examples per minibatch step (``None``: the whole evaluation
            set).
        spring: NEB spacing relaxation in [0, 1] (0 = none, 1 = jump to the midpoint).
        cycles: fixed budget only: AutoNEB cycles the steps are split into.
        insert: AutoNEB images inserted per pair after each of the first two cycles.
        t_samples: Bezier curve points per pair per step.
        max_shortcuts: ``"mst"`` only: how many non-tree pairs to add (default K-1).
        screen_points: ``"mst"`` only: points per straight segment when ranking all pairs.

    Returns:
        :class:`Paths`. Raises ``ValueError`` for an unknown method/pairing, bad indices,
        pairs involving diverged minima, fewer than two usable minima, or a bad setting.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if optimizer is None:
        optimizer = PATH_OPTIMIZER[method]
    if optimizer not in PATH_LR:
        raise ValueError(f"optimizer must be one of {tuple(PATH_LR)}, got {optimizer!r}")
    if steps is not None:
        steps = _check_int(steps, "steps", 0)
    if batch_size is not None:
        batch_size = _check_int(batch_size, "batch_size", 1)
    if max_shortcuts is not None:
        max_shortcuts = _check_int(max_shortcuts, "max_shortcuts", 0)
    if not (isinstance(spring, int | float) and 0 <= spring <= 1):
        raise ValueError(f"spring must be a number in [0, 1], got {spring!r}")
    lr = PATH_LR[optimizer] if lr is None else lr
    check_positive(lr, "lr")
    check_positive(tol, "tol", "0.05: a cycle may lower the barrier by 5% of the segment")
    check_positive(atol, "atol", "1e-4 loss units")
    settings = _Settings(
        method=method, images=_check_int(images, "images", 1 if method == "neb" else 0),
        fixed_steps=steps, lr=float(lr), eval_points=_check_int(eval_points, "eval_points", 0),
        seed=_check_int(seed, "seed", 0), optimizer=optimizer, batch_size=batch_size,
        spring=float(spring), cycles=_check_int(cycles, "cycles", 1),
        insert=_check_int(insert, "insert", 0), t_samples=_check_int(t_samples, "t_samples", 1),
        tol=float(tol), atol=float(atol), max_steps=_check_int(max_steps, "max_steps", 1),
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
        all_pairs = np.array([(i, j) for a, i in enumerate(valid) for j in valid[a + 1 :]],
                             dtype=np.int64).reshape(-1, 2)
        if pairs == "all" or len(valid) == 2:
            stages = [("all", all_pairs)]
        else:
            stages = []  # filled below, the shortcuts depend on the tree's barriers
    else:
        stages = [("list", _check_pairs(pairs, minima))]

    results: list[Paths] = []
    if stages:
        for role, pr in stages:
            results.append(run.optimise(pr, role))
    else:
        screen = run.linear_screen(all_pairs, screen_points)
        tree = _mst_pairs(all_pairs, screen, minima.k)
        tree_res = run.optimise(tree, "tree")
        results.append(tree_res)
        n_short = len(valid) - 1 if max_shortcuts is None else max_shortcuts
        shortcuts = _pick_shortcuts(all_pairs, screen, tree, tree_res.barriers, minima.k,
                                    n_short)
        if len(shortcuts):
            results.append(run.optimise(shortcuts, "shortcut"))

    res = Paths.concat(results)
    return replace(res, settings={
        **settings.to_dict(), "pairs": pairs if isinstance(pairs, str) else "list",
        "max_shortcuts": max_shortcuts, "screen_points": screen_points,
    })


def barrier_matrix(paths: Paths, k: int | None = None) -> np.ndarray:
    """``(K, K)`` symmetric matrix of path barriers for the barcode.

    ``np.inf`` where no path was computed (and for diverged minima); when a pair has several
    paths the lowest barrier counts. The diagonal holds each minimum's own training loss (the
    lowest level at which it is in the sublevel set; ``np.inf`` for diverged minima)."""
    k = paths.k if k is None else int(k)
    if k < paths.k or (paths.m and int(paths.pairs.max()) >= k):
        raise ValueError(f"k={k} is smaller than the number of minima ({paths.k})")
    out = np.full((k, k), np.inf)
    for (i, j), b in zip(paths.pairs, paths.barriers, strict=True):
        if b < out[i, j]:
            out[i, j] = out[j, i] = b
    own = np.full(k, np.inf)
    own[: paths.k] = np.where(np.isfinite(paths.minima_loss), paths.minima_loss, np.inf)
    np.fill_diagonal(out, own)
    return out


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
    history: list[list[float]]
    calm: np.ndarray  # calm checks in a row (see check)
    history_steps: list[list[int]]

    @classmethod
    def start(cls, floor: np.ndarray, barrier: np.ndarray, lr: float) -> _Track:
        m = len(floor)
        return cls(floor, barrier.copy(), np.full(m, lr), np.zeros(m, dtype=np.int64),
                   np.zeros(m, dtype=bool), [[float(b)] for b in barrier],
                   np.zeros(m, dtype=np.int64), [[0] for _ in range(m)])

    def record(self, rows: Sequence[int] | np.ndarray) -> None:
        """Append the current barrier and step count of ``rows`` to their histories."""
        for i in rows:
            self.history[i].append(float(self.barrier[i]))
            self.history_steps[i].append(int(self.steps[i]))

    def check(self, act: np.ndarray, new: np.ndarray, tol: float, atol: float, base_lr: float,
              steps: int) -> np.ndarray:
        """One check of the paths ``act`` (rows) after a cycle; ``new`` their barriers now.

        Keep the cycle where the barrier did not rise by more than ``atol``; undo it where it
        rose or is non-finite (the step size halves). A kept cycle that lowered the barrier
        by at most the tolerance is calm; one that lowered it more resets the count and grows
        the step size by half. Two calm cycles (undone ones in between do not count) and the
        path is converged. Returns the bool mask over ``act`` of the cycles kept."""
        # A rise within atol (the resolution) is no rise: the top of a path moves by that much
        # with any small change of its images, so rejecting it would only stall.
        ok = np.isfinite(new) & (new <= self.barrier[act] + atol)
        keep = act[ok]
        delta = self.barrier[keep] - new[ok]
        self.barrier[keep] = new[ok]
        calm = self.quiet(keep, delta, tol, atol)
        self.calm[keep] = np.where(calm, self.calm[keep] + 1, 0)
        growing = keep[~calm]
        self.lr[growing] = np.minimum(self.lr[growing] * _GROW, base_lr * _MAX_GROWTH)
        self.lr[act[~ok]] *= _SHRINK
        self.steps[act] += steps
        self.record(act)
        self.converged[act[self.calm[act] >= _PATIENCE]] = True
        return ok

    def quiet(self, rows: np.ndarray, delta: np.ndarray, tol: float, atol: float) -> np.ndarray:
        """Which of ``rows`` moved their barrier by at most the tolerance in the last check."""
        return np.abs(delta) <= tol * np.maximum(self.barrier[rows] - self.floor[rows], 0) + atol


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

    def optimise(self, pairs: np.ndarray, role: str) -> Paths:
        """Optimised paths for ``pairs``, barriers clamped to the endpoints, no settings."""
        s = self.s
        a, c = self.thetas[pairs[:, 0]], self.thetas[pairs[:, 1]]
        floor = np.maximum(self.minima_loss[pairs[:, 0]], self.minima_loss[pairs[:, 1]])
        n_img = s.images + 2
        lin_chain = _lerp(a[:, None], c[:, None], torch.linspace(
            0, 1, n_img, device=a.device, dtype=a.dtype)[None, :, None])  # (M, n, P)
        lin_t, lin_loss = self._chain_profile(lin_chain)
        lin_bar = lin_loss.max(axis=1)
        m = len(pairs)
        track = _Track.start(floor, lin_bar, s.lr)
        if s.method == "linear" or s.fixed_steps == 0:
            chain, prof_t, prof_loss = lin_chain, lin_t, lin_loss
            track.converged[:] = s.method == "linear"  # the straight line is exact as it is
        elif s.method == "neb":
            chain = self._neb(lin_chain, role, track)
            prof_t, prof_loss = self._chain_profile(chain)
        else:
            bend = self._bezier(a, c, role, track)
            t_img = torch.linspace(0, 1, n_img, device=a.device, dtype=a.dtype)
            chain = _bezier_points(a, bend, c, t_img)
            prof_t, prof_loss = self._bezier_profile(a, bend, c)
        bar = prof_loss.max(axis=1)
        fallback = bar > lin_bar
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
            settings={}, converged=track.converged.copy(), steps_used=track.steps.copy(),
            barrier_history=tuple(np.asarray(h) for h in track.history),
            history_steps=tuple(np.asarray(h, dtype=np.int64) for h in track.history_steps),
            perp_grad_norm=np.where(fallback, self._perp_grad_norm(lin_chain, fallback),
                                    self._perp_grad_norm(chain, ~fallback)),
        )

    # -- NEB
    def _neb(self, chain: Tensor, role: str, track: _Track) -> Tensor:
        """Nudged elastic band on ``(M, n, P)`` chains with AutoNEB insertion: minibatch
        cycles until the barriers are steady, then full-batch cycles with a climbing image
        (a path is converged only if both phases met the stopping rule before their caps)."""
        s = self.s
        if s.fixed_steps is not None:
            return self._neb_fixed(chain, role, track)
        cap = np.full(len(chain), s.max_steps)
        chain = self._neb_cycles(chain, role, track, self._batches(role), s.cycle_steps, cap,
                                 climb=False, insert=s.insert, phase=0)
        if s.final_steps == 0:
            return chain
        # A path whose top is within atol of its higher endpoint has no saddle to resolve:
        # it is monotone up to the resolution and skips the full-batch phase.
        flat = track.barrier <= track.floor + s.atol
        first = track.converged.copy()
        track.converged &= flat
        track.calm[:] = 0
        x, y = self.land.x_eval, self.land.y_eval
        cap = np.where(flat, track.steps, track.steps + s.final_steps)
        chain = self._neb_cycles(chain, role, track, lambda: (x, y), _FINAL_CHECK, cap,
                                 climb=s.climb, insert=0, phase=1)
        track.converged &= first
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
        ``phase * M + finished`` of ``2 M`` (two phases)."""
        m = len(chain)

        def run(act: np.ndarray, sub: Tensor, lr: Tensor) -> tuple[Tensor, np.ndarray]:
            self._neb_steps(sub, lr.view(-1, 1, 1), draw, cycle_steps, role,
                            (phase * m + m - len(act), 2 * m), climb=climb, active=len(act),
                            count_steps=False)
            return sub, self._chain_barrier(sub, track.floor[act])

        def refine(cycle: int, state: Tensor) -> Tensor:
            if cycle > 2 or insert == 0:
                return state
            state, mids = self._insert(state)
            track.barrier = np.maximum(track.barrier, mids)
            return state

        return self._cycles(chain.clone(), track, cycle_steps, cap, run, refine)

    def _cycles(self, state: Tensor, track: _Track, cycle_steps: int, cap: np.ndarray,
                run: Callable[[np.ndarray, Tensor, Tensor], tuple[Tensor, np.ndarray]],
                after: Callable[[int, Tensor], Tensor] | None = None) -> Tensor:
        """Checked cycles on per-path states ``(M, ...)`` (NEB chains, Bezier bends) until
        each path is converged (:meth:`_Track.check`) or has used ``cap`` ``(M,)`` steps.
        ``run(rows, states, lr)`` runs one cycle of the still active paths and returns their
        new states and barriers; a kept cycle's state replaces the old one, converged paths
        leave the batch. ``after(cycle, state)`` may change every state after a cycle."""
        s, dev = self.s, state.device
        todo = track.steps < cap
        cycle = 0
        while todo.any():
            act = np.flatnonzero(todo)
            lr = torch.as_tensor(track.lr[act], dtype=state.dtype, device=dev)
            sub, new = run(act, state.index_select(0, torch.as_tensor(act, device=dev)), lr)
            ok = track.check(act, new, s.tol, s.atol, s.lr, cycle_steps)
            state[torch.as_tensor(act[ok], device=dev)] = sub[torch.as_tensor(
                np.flatnonzero(ok), device=dev)]
            todo &= ~track.converged & (track.steps < cap)
            cycle += 1
            if after is not None:
                state = after(cycle, state)
        return state

    def _neb_steps(self, chain: Tensor, lr: Tensor, draw: Callable[[], tuple[Tensor, Tensor]],
                   steps: int, role: str, done_total: tuple[int, int], *, climb: bool,
                   active: int = 0, count_steps: bool = True) -> None:
        """``steps`` NEB steps on ``chain`` ``(M, n, P)`` in place (data from ``draw``),
        momentum SGD or Adam, step size ``lr`` ``(M, 1, 1)``; with ``climb``, each chain's
        highest image climbs along the chain instead of relaxing. Progress is reported as
        ``done_total``, plus the steps taken here when ``count_steps``."""
        s = self.s
        m, n, p = chain.shape
        opt = BatchedOptimizer.create(s.optimizer, chain[:, 1:-1].reshape(-1, p), 0.9,
                                      (0.9, 0.999), 1e-8)
        lr_rows = lr.expand(m, n - 2, 1).reshape(-1, 1)
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
                _spring(chain, tau, s.spring, None if img_loss is None
                        else img_loss.nan_to_num(nan=-math.inf).argmax(dim=1))
            if step % every == 0 or step == steps - 1:
                self._report(done + (step + 1 if count_steps else 0), total, {
                    "stage": role, "method": s.method, "mean_loss": float(loss.mean()),
                    "active": active or m})

    def _chain_barrier(self, chain: Tensor, floor: np.ndarray) -> np.ndarray:
        """``(M,)`` barrier of chains ``(M, n, P)`` as it is reported (the top of the dense,
        refined profile; at least ``floor``); ``inf`` where a loss is NaN."""
        return np.maximum(self._chain_profile(chain, report=False)[1].max(axis=1), floor)

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
    def _bezier(self, a: Tensor, c: Tensor, role: str, track: _Track) -> Tensor:
        """Train the bend ``(M, P)`` of quadratic Bezier curves on the expected loss: for a
        fixed budget, or in checked cycles as NEB's minibatch phase (undo a cycle that raised
        the barrier at the images and halve the step; stop when the barrier is steady)."""
        s = self.s
        m, p = a.shape
        draw = self._batches(role)
        gen = torch.Generator().manual_seed(_stage_seed(s.seed, role, _BEZIER_T_KEY))
        bend = 0.5 * (a + c)

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

        def run(act: np.ndarray, sub: Tensor, lr: Tensor) -> tuple[Tensor, np.ndarray]:
            r = torch.as_tensor(act, device=a.device)
            sub = self._bezier_steps(a[r], c[r], sub, lr[:, None], draw, gen, s.cycle_steps,
                                     role)
            return sub, barrier(act, sub)

        return self._cycles(bend, track, s.cycle_steps, np.full(m, s.max_steps), run)

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

    # -- profiles
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

    def _chain_profile(self, chain: Tensor, report: bool = True
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Dense loss along polygonal chains ``(M, n, P)``: ``t (M, L)`` (normalised arc
        length) and ``loss (M, L)``. ``eval_points`` points between neighbouring images, then
        ``PATH_REFINE_ROUNDS`` rounds of ``PATH_REFINE_POINTS`` more on each side of the
        highest point, so the reported maximum is the loss at a point of the chain, close to
        its true top."""
        m, n, _ = chain.shape
        seg_len = (chain[:, 1:] - chain[:, :-1]).to(torch.float64).norm(dim=-1)  # (M, n-1)
        cum = torch.cat([torch.zeros(m, 1, dtype=torch.float64, device=chain.device),
                         seg_len.cumsum(1)], dim=1).cpu().numpy()  # (M, n)

        def points(g: np.ndarray, u: np.ndarray) -> Tensor:  # u in [0, n-1], shape (g, L)
            s = np.minimum(np.floor(u), n - 2).astype(np.int64)
            f = torch.as_tensor(u - s, device=chain.device, dtype=chain.dtype)[..., None]
            gi = torch.as_tensor(g, device=chain.device)[:, None]
            si = torch.as_tensor(s, device=chain.device)
            return _lerp(chain[gi, si], chain[gi, si + 1], f)

        u, vals = self._profile(m, np.linspace(0, n - 1, (n - 1) * (self.s.eval_points + 1)
                                              + 1), points, report)
        s = np.minimum(np.floor(u), n - 2).astype(np.int64)
        # A trial chain that blew up (inf parameters) has no arc length; its barrier is inf
        # and the cycle is undone, so its positions only need to be defined, not meaningful.
        with np.errstate(invalid="ignore", over="ignore"):
            pos = np.take_along_axis(cum, s, 1) + (u - s) * np.take_along_axis(
                np.diff(cum, axis=1), s, 1)
        total = cum[:, -1:]
        usable = np.isfinite(total) & (total > 0)
        t = np.where(usable, pos / np.where(usable, total, 1.0), u / (n - 1))
        return t, vals

    def _bezier_profile(self, a: Tensor, bend: Tensor, c: Tensor, report: bool = True
                        ) -> tuple[np.ndarray, np.ndarray]:
        length = (self.s.images + 1) * (self.s.eval_points + 1) + 1

        def points(g: np.ndarray, u: np.ndarray) -> Tensor:
            t = torch.as_tensor(u, device=a.device, dtype=a.dtype)
            return _bezier_points(a[g], bend[g], c[g], t)

        return self._profile(a.shape[0], np.linspace(0, 1, length), points, report)

    def _profile(self, m: int, u0: np.ndarray, points: Callable[[np.ndarray, np.ndarray], Tensor],
                 report: bool) -> tuple[np.ndarray, np.ndarray]:
        """Loss at path coordinates ``u0`` ``(L,)`` for ``m`` paths, refined around each
        path's highest point: ``u (m, L')`` sorted, and ``loss (m, L')``."""
        u = np.broadcast_to(u0, (m, len(u0))).copy()
        if report:
            self._report(0, 1, {"stage": "profile", "points": m * len(u0)})
        vals = _evaluate_groups(self.land, m, u.shape[1],
                                lambda g: points(g, u[g]))
        rows = np.arange(m)[:, None]
        for _ in range(PATH_REFINE_ROUNDS):
            if u.shape[1] < 2 or m == 0:
                break
            top = np.argmax(vals, axis=1)
            lo = u[np.arange(m), np.maximum(top - 1, 0)]
            mid = u[np.arange(m), top]
            hi = u[np.arange(m), np.minimum(top + 1, u.shape[1] - 1)]
            f = np.arange(1, PATH_REFINE_POINTS + 1) / (PATH_REFINE_POINTS + 1)
            new = np.concatenate([lo[:, None] + (mid - lo)[:, None] * f,
                                  mid[:, None] + (hi - mid)[:, None] * f], axis=1)
            new_vals = _evaluate_groups(self.land, m, new.shape[1],
                                        lambda g, new=new: points(g, new[g]))
            u = np.concatenate([u, new], axis=1)
            vals = np.concatenate([vals, new_vals], axis=1)
            order = np.argsort(u, axis=1, kind="stable")
            u, vals = u[rows, order], vals[rows, order]
        return u, vals


# ------------------------------------------------------------------------------ helpers


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


def _spring(chain: Tensor, tau: Tensor, strength: float, climbing: Tensor | None) -> None:
    """Slide every interior image of ``chain`` ``(M, n, P)`` along its tangent towards the
    arc-length midpoint of its neighbours, in place (``climbing`` ``(M,)``: image indices
    among the interior ones that stay where they are)."""
    d = (chain[:, 1:] - chain[:, :-1]).norm(dim=-1, keepdim=True)
    shift = 0.5 * strength * (d[:, 1:] - d[:, :-1])
    if climbing is not None:
        shift.scatter_(1, climbing.view(-1, 1, 1), 0.0)
    chain[:, 1:-1].addcmul_(tau, shift)




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


def _mst_pairs(pairs: np.ndarray, barriers: np.ndarray, k: int) -> np.ndarray:
    """Edges of the minimum spanning tree of the graph ``pairs`` weighted by ``barriers``."""
    # Ranks as weights: scipy treats zero weights as missing edges, and an MST depends only
    # on the order of the weights.
    ranks = np.empty(len(pairs))
    ranks[np.argsort(barriers, kind="stable")] = np.arange(1, len(pairs) + 1)
    w = np.zeros((k, k))
    w[pairs[:, 0], pairs[:, 1]] = ranks
    tree = minimum_spanning_tree(w).tocoo()
    edges = np.sort(np.stack([tree.row, tree.col], axis=1).astype(np.int64), axis=1)
    order = np.lexsort((edges[:, 1], edges[:, 0]))
    return edges[order]


def _pick_shortcuts(all_pairs: np.ndarray, screen: np.ndarray, tree: np.ndarray,
                    tree_barriers: np.ndarray, k: int, limit: int) -> np.ndarray:
    """Up to ``limit`` non-tree pairs most likely to lower a barcode death: smallest
    ``linear barrier - highest optimised barrier on the tree route between the two``."""
    if limit == 0:
        return np.zeros((0, 2), dtype=np.int64)
    adj: dict[int, list[tuple[int, float]]] = {}
    for (i, j), b in zip(tree, tree_barriers, strict=True):
        adj.setdefault(int(i), []).append((int(j), float(b)))
        adj.setdefault(int(j), []).append((int(i), float(b)))
    route_max = np.full((k, k), np.inf)
    for src in adj:  # minimax over the (unique) tree route, by a walk from every vertex
        route_max[src, src] = -np.inf
        stack = [src]
        while stack:
            u = stack.pop()
            for v, b in adj[u]:
                if route_max[src, v] == np.inf and v != src:
                    route_max[src, v] = max(route_max[src, u], b)
                    stack.append(v)
    in_tree = {(int(i), int(j)) for i, j in tree}
    cand = [(float(screen[n] - route_max[i, j]), n) for n, (i, j) in enumerate(all_pairs)
            if (int(i), int(j)) not in in_tree]
    cand.sort()
    chosen = [all_pairs[n] for _, n in cand[:limit]]
    return np.array(chosen, dtype=np.int64).reshape(-1, 2)
