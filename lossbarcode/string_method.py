"""The string method with a climbing image: a second minimum-energy-path method.

A bar dies at the lowest barrier over *every* route to a lower minimum, and every optimised path
is only an upper bound on it. Two methods that share no code find different local
minimum-energy paths (MEPs); the estimate of a death is the lowest barrier either finds. This
module is that second method: it shares nothing with :mod:`lossbarcode.paths` but the
:class:`~lossbarcode.landscape.Landscape` (no minibatches, no NEB, no profile code of its own
there), so a bug in one cannot hide in both.

The method (simplified string method, W. E, W. Ren and E. Vanden-Eijnden, J. Chem. Phys. 126,
164103 (2007), with a climbing image). A *string* is a chain of ``n = images + 2`` parameter
vectors from ``a`` to ``c``; the endpoints stay fixed. Each step

1. moves every interior image along minus the full-batch gradient of the landscape's evaluation
   loss (an explicit Euler step of size ``dt``); once climbing is on, the highest interior image
   (the *climbing image*, index ``k``) moves along ``-g + 2 (g . tau) tau`` instead, with ``tau``
   the unit chord ``phi[k+1] - phi[k-1]``: up along the path, down across it, so it converges to
   the saddle itself rather than to a point near it;
2. reparametrises: the images are put back at equal arc length along the new polygon by linear
   interpolation -- on each side of the climbing image separately, so it stays where it climbed.

All pairs x interior images go through one ``(B, P)`` evaluation per step, always on the whole
evaluation set (``landscape.x_eval``): minibatch noise biases a maximum upward.

Step size, per pair, scale-free (the same defaults serve a 2-parameter closed form and a
10^5-parameter network). The first step moves the fastest image ``FIRST_MOVE`` of the image
spacing; no step moves an image more than ``MAX_MOVE`` of it. An accepted step grows ``dt`` by
``GROW``; a rejected one is undone and ``dt`` halves. A step is rejected when a loss or gradient
is not finite, or when it was unstable: the secant curvature of the string along its actual
move, ``kappa = sum_i (g_new_i - g_old_i) . d_i / sum_i |d_i|^2`` over the interior images
(the climbing image with its climbing field), must satisfy ``dt * kappa <= STABLE`` -- an Euler
step on a quadratic diverges exactly when ``dt * curvature > 2``, and a growing unstable mode
soon dominates the move. (The energy of a reparametrised string is not monotone along
convergent iterations -- the images slide along the path -- so an energy test rejects good
steps at every ``dt`` and stalls; the secant has no such fixed point and is insensitive to
round-off. Summed over the string, it is not fooled by one image crossing a ReLU kink, whose
gradient jump over a tiny move would veto every ``dt``.) A pair whose ``dt`` falls below
``STALL_FACTOR`` times its first ``dt`` stops and is *stalled*, never converged.

Climbing starts at the first convergence check at which the plain string's barrier was quiet
(see below), or at ``max_steps // 2`` at the latest; with ``climb=False`` it never starts.

Convergence checks, every ``check_every`` steps per pair, evaluate the loss at ``CHECK_POINTS``
points inside every segment too (one forward evaluation); the barrier estimate is the highest of
these and of the images. The pair is *converged* when

* the estimate changed by at most ``tol * segment + atol`` since the previous check, twice in a
  row after climbing started (``segment`` = estimate - the higher endpoint loss), and
* the polygon's top is an image: no segment rises above every image by more than that, and
* the top is resolved: the climbing image is a critical point (full-batch gradient norm
  ``<= grad_tol``), or the path is monotone (estimate within ``atol`` of the higher endpoint:
  no saddle to resolve).

A pair still running after ``max_steps`` steps (rejected ones count) is *capped*: neither
converged nor stalled. With ``climb=False`` the same rule applies to the highest image, which
then rarely sits at a critical point: a plain string is a comparison, and usually capped.

Refinement. In a high-dimensional landscape a chord between two low images can cut across a
ridge (the images sit in a curved valley, or in different valleys), so the polygon's top is
inside a segment, not at the climbing image. When a quiet check finds segments that rise above
every image by more than the threshold above, an image is inserted at the highest checked
point of each (the highest first, up to ``max_images`` in all); the images keep the arc-length
fractions they were given (an inserted image gets one between its neighbours'), so the
reparametrisation keeps the extra resolution where it was needed. Strings of different lengths
are still evaluated together, one evaluation per step.

The reported barrier is the maximum of the final polygon, not a sampled value: the loss is
evaluated at ``PROFILE_POINTS`` points in every segment, then maximised by a golden-section
search on the two segments around the highest sample to ``GOLDEN_TOL`` in arc-length position;
the barrier is the maximum of everything evaluated and never below either endpoint loss.

Images. Six interior images (the default :data:`~lossbarcode.choices.PATH_IMAGES`) are enough
to start: the climbing image resolves the top whatever the spacing, and refinement adds images
only where a chord cuts a ridge (on digits fcn 8x2 strings ended with 18-27). Starting with more
costs proportionally at every step and helps only where the path is curved everywhere.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lossbarcode import choices
from lossbarcode.landscape import Landscape

GROW, SHRINK = 1.1, 0.5  # step-size change after an accepted / a rejected step
STALL_FACTOR = 1e-6  # dt below this share of the first dt: stalled
FIRST_MOVE = 0.1  # the first step moves the fastest image this share of the image spacing
MAX_MOVE = 0.5  # no step moves an image further than this share of the image spacing
STABLE = 2.0  # dt x secant curvature above this: the Euler step was unstable
CHECK_POINTS = 3  # loss samples inside every segment at a convergence check
MAX_REFINE = 2  # default max_images: what this many doublings of the images would give
PROFILE_POINTS = 8  # loss samples per segment of the final polygon (its start included)
GOLDEN_TOL = 1e-6  # golden-section bracket width in arc-length position
GRAD_TOL = 1e-3  # the gradient norm the project calls a critical point
MAX_STEPS = 5000
CHECK_EVERY = 10
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0  # 0.618...


@dataclass(frozen=True, eq=False)
class StringPaths:
    """Result of :func:`string_paths` for ``M`` pairs.

    Attributes:
        chains: ``M`` CPU tensors ``(n_m, P)``, the final strings, endpoints included
            (``n_m = images + 2`` plus the images refinement inserted).
        barriers: ``(M,)`` maximum loss along each final chain (the polygon through its images),
            ``>=`` both endpoint losses.
        top_t: ``(M,)`` arc-length position in ``[0, 1]`` of that maximum.
        top_grad_norm: ``(M,)`` full-batch gradient norm at the highest interior image of the
            final chain -- the climbing image when climbing was on. It is measured, never set:
            on a monotone path that image sits on a slope and the norm need not be small.
        converged, stalled: ``(M,)`` bool, never both; neither = capped at ``max_steps``.
        steps: ``(M,)`` int, steps taken (rejected ones included: each cost an evaluation).
        climbing: ``(M,)`` bool, whether the climbing image was on at the end.
        history: ``M`` arrays ``(checks,)``, the barrier estimate at each check (every
            ``check_every`` steps).
        profile_t, profile_loss: ``M`` arrays ``(q,)``, the dense loss profile of each final
            chain, ``t`` sorted in ``[0, 1]`` (arc-length position), every point evaluated for
            the barrier included.
        endpoint_loss: ``(M, 2)`` losses of ``a`` and ``c``.
        seconds: wall time of the whole call.
    """

    chains: tuple[Tensor, ...]
    barriers: np.ndarray
    top_t: np.ndarray
    top_grad_norm: np.ndarray
    converged: np.ndarray
    stalled: np.ndarray
    steps: np.ndarray
    climbing: np.ndarray
    history: tuple[np.ndarray, ...]
    profile_t: tuple[np.ndarray, ...]
    profile_loss: tuple[np.ndarray, ...]
    endpoint_loss: np.ndarray
    seconds: float

    @property
    def m(self) -> int:
        """Number of pairs."""
        return len(self.chains)

    @property
    def excess(self) -> np.ndarray:
        """``(M,)`` barrier minus the higher endpoint loss (the segment a death would add)."""
        return self.barriers - self.endpoint_loss.max(axis=1)


def string_paths(
    landscape: Landscape,
    a: Any,
    c: Any,
    *,
    images: int = choices.PATH_IMAGES,
    start: Any = None,
    tol: float = choices.PATH_TOL,
    atol: float = choices.PATH_ATOL,
    grad_tol: float = GRAD_TOL,
    max_steps: int = MAX_STEPS,
    check_every: int = CHECK_EVERY,
    climb: bool = True,
    max_images: int | None = None,
) -> StringPaths:
    """Minimum-energy paths from ``a[m]`` to ``c[m]`` by the string method (module docstring).

    Args:
        landscape: the loss; its evaluation set (``x_eval``, ``y_eval``) is used, full batch.
        a, c: ``(M, P)`` endpoints (tensors or arrays), finite, ``a[m] != c[m]``.
        images: interior images per string, ``>= 1``.
        start: optional ``(M, s, P)`` initial chains (``s >= 2``) with ``start[:, 0] == a`` and
            ``start[:, -1] == c`` (to round-off); resampled at equal arc length to
            ``images + 2`` points. Default: the straight segments.
        tol, atol: barrier quiet between two checks: change ``<= tol * segment + atol``
            (``0 <= tol < 1``, ``atol >= 0``).
        grad_tol: gradient norm at which the climbing image counts as a critical point.
        max_steps: steps per pair at most (then capped); check_every: steps between checks.
        climb: use the climbing image (off: a plain string, for comparison).
        max_images: interior images a string may grow to by refinement (default: two
            doublings, ``4 * images + 3``; ``images`` turns refinement off).

    Returns:
        :class:`StringPaths`.
    """
    t0 = time.perf_counter()
    chain0 = _validate(landscape, a, c, images, start, tol, atol, grad_tol, max_steps,
                       check_every, climb)
    if max_images is None:
        max_images = (int(images) + 1) * 2**MAX_REFINE - 1
    _integer(max_images, f"max_images (at least images = {images})", int(images))
    run = _Run(landscape, chain0, tol=float(tol), atol=float(atol), grad_tol=float(grad_tol),
               max_steps=int(max_steps), check_every=int(check_every), climb=bool(climb),
               max_n=int(max_images) + 2)
    run.solve()
    m = run.m
    barriers, top_t = np.zeros(m), np.zeros(m)
    prof_t: list[np.ndarray] = [np.zeros(0)] * m
    prof_l: list[np.ndarray] = [np.zeros(0)] * m
    for g in run.groups:  # strings of equal length together
        b, tt, pt, pl = _polygon_maxima(landscape, g.chain, run.ends[g.pairs])
        barriers[g.pairs], top_t[g.pairs] = b, tt
        for i, pair in enumerate(g.pairs):
            prof_t[pair], prof_l[pair] = pt[i], pl[i]
    return StringPaths(
        chains=tuple(ch.detach().cpu().clone() for ch in run.chains()),
        barriers=barriers,
        top_t=top_t,
        top_grad_norm=run.top_grad_norm(),
        converged=run.converged.copy(),
        stalled=run.stalled.copy(),
        steps=run.steps.copy(),
        climbing=run.climbing(),
        history=tuple(np.asarray(h, dtype=np.float64) for h in run.history),
        profile_t=tuple(prof_t),
        profile_loss=tuple(prof_l),
        endpoint_loss=run.ends.copy(),
        seconds=time.perf_counter() - t0,
    )


# ---------------------------------------------------------------------------- validation
def _as_2d(value: Any, name: str, land: Landscape) -> Tensor:
    t = torch.as_tensor(value)
    if not (t.dtype.is_floating_point or t.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"{name} must hold real numbers, got dtype {t.dtype}")
    if t.dim() != 2 or t.shape[0] == 0:
        raise ValueError(f"{name} must have shape (M, P) with M >= 1, got {tuple(t.shape)}")
    if t.shape[1] != land.n_params:
        raise ValueError(f"{name} has P={t.shape[1]} parameters per row, the landscape "
                         f"has P={land.n_params}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} holds NaN or inf")
    return t.to(device=land.device, dtype=land.dtype)


def _number(value: Any, name: str, lo: float, hi: float = math.inf, *,
            lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    v = float(value)
    below = v <= lo if lo_open else v < lo
    if not math.isfinite(v) or below or v >= hi:
        bounds = f"{'(' if lo_open else '['}{lo}, {hi})"
        raise ValueError(f"{name} must be finite and in {bounds}, got {value!r}")
    return v


def _integer(value: Any, name: str, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    return int(value)


def _validate(land: Landscape, a: Any, c: Any, images: Any, start: Any, tol: Any, atol: Any,
              grad_tol: Any, max_steps: Any, check_every: Any, climb: Any) -> Tensor:
    """The initial chains ``(M, images + 2, P)`` from checked arguments."""
    if not isinstance(land, Landscape):
        raise ValueError(f"landscape must be a lossbarcode Landscape, got {type(land).__name__}")
    a_t, c_t = _as_2d(a, "a", land), _as_2d(c, "c", land)
    if a_t.shape != c_t.shape:
        raise ValueError(f"a and c must have the same shape, got {tuple(a_t.shape)} and "
                         f"{tuple(c_t.shape)}")
    same = (a_t == c_t).all(dim=1)
    if same.any():
        raise ValueError(f"a and c coincide for pair(s) {same.nonzero().flatten().tolist()}: "
                         "a path needs two distinct endpoints")
    n_img = _integer(images, "images", 1)
    _number(tol, "tol", 0.0, 1.0)
    _number(atol, "atol", 0.0)
    _number(grad_tol, "grad_tol", 0.0, lo_open=True)
    _integer(max_steps, "max_steps", 1)
    _integer(check_every, "check_every", 1)
    if not isinstance(climb, (bool, np.bool_)):
        raise ValueError(f"climb must be True or False, got {climb!r}")
    m, p = a_t.shape
    if start is None:
        f = torch.linspace(0.0, 1.0, n_img + 2, device=land.device, dtype=land.dtype)
        line = a_t[:, None] + f[None, :, None] * (c_t - a_t)[:, None]
        line[:, -1] = c_t  # a + 1 * (c - a) is c only up to round-off
        return line
    s = torch.as_tensor(start)
    if not s.dtype.is_floating_point:
        raise ValueError(f"start must hold real numbers, got dtype {s.dtype}")
    if s.dim() != 3 or s.shape[0] != m or s.shape[1] < 2 or s.shape[2] != p:
        raise ValueError(f"start must have shape (M, s, P) = ({m}, s >= 2, {p}), got "
                         f"{tuple(s.shape)}")
    if not torch.isfinite(s).all():
        raise ValueError("start holds NaN or inf")
    s = s.to(device=land.device, dtype=land.dtype).clone()
    for end, name, idx in ((a_t, "a", 0), (c_t, "c", -1)):
        scale = 1.0 + end.abs().amax(dim=1)
        off = (s[:, idx] - end).abs().amax(dim=1) / scale
        if (off > 1e-5).any():
            raise ValueError(f"start[:, {idx}] must equal {name} (largest relative difference "
                             f"{float(off.max()):.3g})")
    s[:, 0], s[:, -1] = a_t, c_t
    if s.shape[1] == n_img + 2:
        return s
    length = _arc(s)[:, -1]
    if (length <= 0).any():
        raise ValueError("start has a chain of zero length")
    targets = torch.linspace(0.0, 1.0, n_img + 2, device=s.device, dtype=s.dtype)
    out = _at_positions(s, targets.expand(m, -1).contiguous())
    out[:, 0], out[:, -1] = a_t, c_t
    return out


# ---------------------------------------------------------------------------- geometry
def _arc(chain: Tensor) -> Tensor:
    """Cumulative arc length ``(M, n)`` of chains ``(M, n, P)`` (0 at the first image)."""
    seg = (chain[:, 1:] - chain[:, :-1]).norm(dim=-1)
    return torch.cat([torch.zeros_like(seg[:, :1]), seg.cumsum(dim=1)], dim=1)


def _at_positions(chain: Tensor, t: Tensor) -> Tensor:
    """Points ``(M, q, P)`` of the polygons ``chain (M, n, P)`` at arc-length fractions
    ``t (M, q)`` in ``[0, 1]`` (linear interpolation between neighbouring images)."""
    s = _arc(chain)
    total = s[:, -1:].clamp_min(torch.finfo(s.dtype).tiny)
    u = (s / total).contiguous()
    n = chain.shape[1]
    j = (torch.searchsorted(u, t.contiguous(), right=True) - 1).clamp(0, n - 2)
    lo, hi = u.gather(1, j), u.gather(1, j + 1)
    w = ((t - lo) / (hi - lo).clamp_min(torch.finfo(s.dtype).tiny)).clamp(0.0, 1.0)
    p = chain.shape[2]
    left = chain.gather(1, j[..., None].expand(-1, -1, p))
    right = chain.gather(1, (j + 1)[..., None].expand(-1, -1, p))
    return left + w[..., None] * (right - left)


def _reparametrise(chain: Tensor, u: Tensor, k: Tensor, climbing: Tensor) -> Tensor:
    """Images of ``chain (M, n, P)`` put back at arc-length fractions ``u (M, n)`` (increasing
    from 0 to 1; equal spacing unless refinement inserted images) along its polygon.

    Rows with ``climbing`` keep image ``k`` (``(M,)`` long, ``1 <= k <= n - 2``) where it is and
    scale the fractions of each side to the part of the polygon on that side. Endpoints (and
    the climbing image) are copied exactly, not interpolated."""
    m, n, _ = chain.shape
    s = _arc(chain)
    total = s[:, -1].clamp_min(torch.finfo(s.dtype).tiny)
    u = u.to(chain.dtype)
    j = torch.arange(n, device=chain.device)[None, :].expand(m, -1)
    sk = s.gather(1, k[:, None]) / total[:, None]  # the climbing image's own position
    uk = u.gather(1, k[:, None])
    left = sk * u / uk
    right = sk + (1 - sk) * (u - uk) / (1 - uk)
    split = torch.where(j <= k[:, None], left, right)
    t = torch.where(climbing[:, None], split, u).clamp(0.0, 1.0)
    out = _at_positions(chain, t)
    out[:, 0], out[:, -1] = chain[:, 0], chain[:, -1]
    rows = climbing.nonzero().flatten()
    out[rows, k[rows]] = chain[rows, k[rows]]
    return out


def _unit(v: Tensor) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)


# ---------------------------------------------------------------------------- the iteration
@dataclass(eq=False)
class _Group:
    """The pairs whose strings have the same number of images ``n`` (refinement regroups).

    ``pairs (r,)`` pair ids; ``u (r, n)`` float64, the images' target arc-length fractions;
    ``chain (r, n, P)``; ``loss (r, n)`` float64 with the endpoints; ``grad (r, n - 2, P)`` at
    the interior images; ``dt``, ``dt0 (r,)`` float64 step sizes (now, first); ``climbing (r,)``
    bool."""

    pairs: np.ndarray
    u: Tensor
    chain: Tensor
    loss: Tensor
    grad: Tensor
    dt: Tensor
    dt0: Tensor
    climbing: Tensor

    @property
    def n(self) -> int:
        return self.chain.shape[1]

    def take(self, keep: np.ndarray) -> _Group:
        """The rows ``keep`` (bool ``(r,)``) as a group of their own."""
        i = torch.as_tensor(keep.nonzero()[0], device=self.chain.device)
        return _Group(self.pairs[keep], self.u[i], self.chain[i], self.loss[i], self.grad[i],
                      self.dt[i], self.dt0[i], self.climbing[i])

    @staticmethod
    def join(parts: list[_Group]) -> _Group:
        """One group of ``parts`` (all of the same ``n``)."""
        return _Group(np.concatenate([g.pairs for g in parts]),
                      *(torch.cat([getattr(g, name) for g in parts]) for name in (
                          "u", "chain", "loss", "grad", "dt", "dt0", "climbing")))


@dataclass(eq=False)
class _Proposal:
    """One group's trial step: rows ``li (r,)`` (local), the images before (``phi``,
    ``grad``) and after (``new (r, n, P)``), the climbing image ``k (r,)`` (chain index), its
    chord ``tau (r, P)``, which rows climb, and the step sizes used ``dt (r,)``."""

    group: _Group
    li: Tensor
    phi: Tensor
    grad: Tensor
    new: Tensor
    k: Tensor
    tau: Tensor
    climbing: Tensor
    dt: Tensor


class _Run:
    """The string iteration for ``M`` pairs (module docstring); per-pair bookkeeping in numpy
    arrays indexed by pair id, the strings in :class:`_Group` s of equal length."""

    def __init__(self, land: Landscape, chain: Tensor, *, tol: float, atol: float,
                 grad_tol: float, max_steps: int, check_every: int, climb: bool,
                 max_n: int) -> None:
        self.land = land
        self.tol, self.atol, self.grad_tol = tol, atol, grad_tol
        self.max_steps, self.check_every, self.climb = max_steps, check_every, climb
        self.max_n = max_n
        m, n, p = chain.shape
        self.m, self.p = m, p
        ends = self._losses(torch.stack([chain[:, 0], chain[:, -1]], dim=1))
        if not np.isfinite(ends).all():
            raise ValueError("an endpoint's loss is NaN or inf; a path needs finite endpoints")
        self.ends = ends  # (M, 2)
        (inner, grad), = self._evaluate([chain[:, 1:-1]])
        dev, f64 = chain.device, torch.float64
        ends_t = torch.as_tensor(ends, device=dev, dtype=f64)
        loss = torch.cat([ends_t[:, :1], inner, ends_t[:, 1:]], dim=1)
        spacing = _arc(chain)[:, -1].to(f64) / (n - 1)
        fastest = grad.norm(dim=-1).amax(dim=1).to(f64).clamp_min(torch.finfo(f64).tiny)
        dt = FIRST_MOVE * spacing / fastest  # scale-free: a share of the spacing
        u = torch.linspace(0.0, 1.0, n, dtype=f64, device=dev).expand(m, -1).clone()
        self.groups = [_Group(np.arange(m), u, chain.clone(), loss, grad, dt, dt.clone(),
                              torch.zeros(m, dtype=torch.bool, device=dev))]
        self.active = np.ones(m, dtype=bool)
        self.converged = np.zeros(m, dtype=bool)
        self.stalled = np.zeros(m, dtype=bool)
        self.steps = np.zeros(m, dtype=np.int64)
        self.quiet = np.zeros(m, dtype=np.int64)
        self.history: list[list[float]] = [[] for _ in range(m)]
        # A start on non-finite ground cannot be judged, so it cannot move.
        bad = ~(torch.isfinite(loss).all(1) & torch.isfinite(grad).flatten(1).all(1))
        self.stalled[bad.cpu().numpy()] = True
        self.active[bad.cpu().numpy()] = False

    # -- evaluations: each call is one batched landscape evaluation
    def _evaluate(self, parts: list[Tensor]) -> list[tuple[Tensor, Tensor]]:
        """Full-batch losses ``(r, q)`` (float64) and gradients ``(r, q, P)`` of every
        ``(r, q, P)`` in ``parts``, in one ``(sum r*q, P)`` evaluation."""
        flat = torch.cat([x.reshape(-1, self.p) for x in parts])
        loss, grad = self.land.evaluate_batch(flat, self.land.x_eval, self.land.y_eval,
                                              grad=True)
        assert grad is not None
        out, at = [], 0
        for x in parts:
            r, q = x.shape[:2]
            out.append((loss[at: at + r * q].to(torch.float64).reshape(r, q),
                        grad[at: at + r * q].reshape(r, q, self.p)))
            at += r * q
        return out

    def _losses(self, points: Tensor) -> np.ndarray:
        return _losses(self.land, points)

    # -- the loop
    def solve(self) -> None:
        it = 0
        while self.active.any() and it < self.max_steps:
            self._step()
            it += 1
            if it % self.check_every == 0:
                self._check()

    def _step(self) -> None:
        props = []
        for g in self.groups:
            sel = self.active[g.pairs]
            if sel.any():
                props.append(self._propose(g, torch.as_tensor(sel.nonzero()[0],
                                                              device=g.chain.device)))
        results = self._evaluate([pr.new[:, 1:-1] for pr in props])
        for pr, (new_loss, new_grad) in zip(props, results, strict=True):
            self._judge(pr, new_loss, new_grad)

    def _propose(self, g: _Group, li: Tensor) -> _Proposal:
        phi, loss, grad, climbing = g.chain[li], g.loss[li], g.grad[li], g.climbing[li]
        ar = torch.arange(len(li), device=phi.device)
        k = loss[:, 1:-1].argmax(dim=1) + 1  # the highest interior image (chain index)
        tau = _unit(phi[ar, k + 1] - phi[ar, k - 1])
        move = -grad
        gk = grad[ar, k - 1]
        climbed = -gk + 2 * (gk * tau).sum(-1, keepdim=True) * tau
        move = move.clone()
        move[ar, k - 1] = torch.where(climbing[:, None], climbed, move[ar, k - 1])
        # Trust cap: no image moves more than MAX_MOVE of the spacing (images that overtake
        # each other fold the string, and its reparametrisation means nothing).
        f64 = torch.float64
        spacing = _arc(phi)[:, -1].to(f64) / (g.n - 1)
        fastest = move.norm(dim=-1).amax(dim=1).to(f64).clamp_min(torch.finfo(f64).tiny)
        dt = torch.minimum(g.dt[li], MAX_MOVE * spacing / fastest)
        moved = phi.clone()
        moved[:, 1:-1] += dt.to(phi.dtype)[:, None, None] * move
        return _Proposal(g, li, phi, grad, _reparametrise(moved, g.u[li], k, climbing), k, tau,
                         climbing, dt)

    def _judge(self, pr: _Proposal, new_loss: Tensor, new_grad: Tensor) -> None:
        """Accept (grow ``dt``) or undo (halve it) each row of a trial step; stall rows whose
        ``dt`` fell below the floor."""
        g, k, tau = pr.group, pr.k, pr.tau
        ar = torch.arange(len(pr.li), device=pr.phi.device)
        # Secant curvature of the whole string along its actual move (the climbing image: of
        # its climbing field). Summed over the images, not per image: one image crossing a
        # ReLU kink has a gradient jump over a tiny move, a huge per-image secant at any dt.
        d = pr.new[:, 1:-1] - pr.phi[:, 1:-1]
        y = new_grad - pr.grad
        yk = y[ar, k - 1]
        y[ar, k - 1] = torch.where(pr.climbing[:, None],
                                   yk - 2 * (yk * tau).sum(-1, keepdim=True) * tau, yk)
        f64 = torch.float64
        kappa = (y * d).sum((1, 2)).to(f64) / (d * d).sum((1, 2)).to(f64).clamp_min(
            torch.finfo(f64).tiny)
        finite = (torch.isfinite(new_loss).all(1) & torch.isfinite(new_grad).flatten(1).all(1)
                  & torch.isfinite(kappa))
        ok = finite & (pr.dt * kappa <= STABLE)
        keep = pr.li[ok]
        g.chain[keep] = pr.new[ok]
        g.loss[keep, 1:-1] = new_loss[ok]
        g.grad[keep] = new_grad[ok]
        g.dt[pr.li] = torch.where(ok, pr.dt * GROW, pr.dt * SHRINK)
        pairs = g.pairs[pr.li.cpu().numpy()]
        self.steps[pairs] += 1
        stall = (g.dt[pr.li] < STALL_FACTOR * g.dt0[pr.li]).cpu().numpy()
        self.stalled[pairs[stall]] = True
        self.active[pairs[stall]] = False

    # -- the stopping rule
    def _check(self) -> None:
        """Barrier estimates at every active pair (its images and ``CHECK_POINTS`` points
        inside every segment: one forward evaluation), then the stopping rule, the start of
        climbing and refinement."""
        due = [(g, self.active[g.pairs].nonzero()[0]) for g in self.groups]
        due = [(g, rows) for g, rows in due if len(rows)]
        if not due:
            return
        frac = torch.arange(1, CHECK_POINTS + 1, dtype=torch.float64) / (CHECK_POINTS + 1)
        points = []
        for g, rows in due:
            phi = g.chain[torch.as_tensor(rows, device=g.chain.device)]
            f = frac.to(device=phi.device, dtype=phi.dtype)[None, None, :, None]
            seg = phi[:, :-1, None] + f * (phi[:, 1:] - phi[:, :-1])[:, :, None]
            points.append(seg.reshape(len(rows), -1, self.p))
        flat = _losses(self.land, torch.cat([x.reshape(1, -1, self.p) for x in points], dim=1))
        inserts: dict[int, list[tuple[int, float]]] = {}
        at = 0
        for (g, rows), pts in zip(due, points, strict=True):
            size = pts.shape[0] * pts.shape[1]
            between = flat[0, at: at + size].reshape(len(rows), g.n - 1, CHECK_POINTS)
            at += size
            inserts.update(self._decide(g, rows, between))
        if inserts:
            self._refine(inserts)

    def _decide(self, g: _Group, rows: np.ndarray, between: np.ndarray
                ) -> dict[int, list[tuple[int, float]]]:
        """The stopping rule for the group's rows ``rows``, given the losses ``between
        (r, n - 1, CHECK_POINTS)`` inside their segments. Returns, per pair to refine, the
        images to insert: ``(segment, fraction of the segment)``."""
        idx = torch.as_tensor(rows, device=g.chain.device)
        loss = g.loss[idx].cpu().numpy()
        images_top = loss.max(axis=1)
        seg_top = between.max(axis=2)  # (r, n - 1)
        barrier = np.maximum(images_top, seg_top.max(axis=1))
        high_end = np.maximum(loss[:, 0], loss[:, -1])
        segment = np.maximum(barrier - high_end, 0.0)
        top = g.loss[idx][:, 1:-1].argmax(dim=1)
        ar = torch.arange(len(rows), device=idx.device)
        crit = g.grad[idx][ar, top].norm(dim=-1).to(torch.float64)
        crit_ok = (crit <= self.grad_tol).cpu().numpy()
        climbing = g.climbing[idx].cpu().numpy()
        inserts: dict[int, list[tuple[int, float]]] = {}
        for i, row in enumerate(rows):
            pair = int(g.pairs[row])
            hist = self.history[pair]
            thr = self.tol * segment[i] + self.atol
            quiet = bool(hist) and abs(barrier[i] - hist[-1]) <= thr
            hist.append(float(barrier[i]))
            # Segments that rise above every image: the chord cuts across higher ground than
            # the string follows, so the images there are too sparse. Once the string has
            # settled, put a new image at the highest point of each (the highest first).
            bulges = np.flatnonzero(seg_top[i] > images_top[i] + thr)
            room = self.max_n - g.n
            if quiet and len(bulges) and room > 0:
                worst = bulges[np.argsort(-seg_top[i, bulges], kind="stable")][:room]
                inserts[pair] = [(int(j), float((1 + between[i, j].argmax())
                                                / (CHECK_POINTS + 1))) for j in sorted(worst)]
                self.quiet[pair] = 0
                continue
            if self.climb and not climbing[i]:
                if quiet or self.steps[pair] >= self.max_steps // 2:
                    g.climbing[row] = True  # the quiet streak starts again with the climb
                    self.quiet[pair] = 0
                continue
            self.quiet[pair] = self.quiet[pair] + 1 if quiet else 0
            monotone = segment[i] <= self.atol
            resolved = len(bulges) == 0
            if self.quiet[pair] >= 2 and resolved and (crit_ok[i] or monotone):
                self.converged[pair] = True
                self.active[pair] = False
        return inserts

    def _refine(self, inserts: dict[int, list[tuple[int, float]]]) -> None:
        """Insert images into the strings of the pairs in ``inserts`` (``(segment, fraction)``
        each), on the polygon, with target fractions ``u`` in between their neighbours' (the
        reparametrisation keeps them there). One evaluation for the new images."""
        rows: list[tuple[_Group, int, list[tuple[int, float]]]] = []
        kept: list[_Group] = []
        for g in self.groups:
            mask = np.isin(g.pairs, list(inserts))
            rows += [(g, r, inserts[int(g.pairs[r])]) for r in mask.nonzero()[0]]
            if (~mask).any():
                kept.append(g.take(~mask))
        new_points = []
        for g, r, ins in rows:
            j = torch.as_tensor([s for s, _ in ins], device=g.chain.device)
            f = torch.as_tensor([f for _, f in ins], device=g.chain.device, dtype=g.chain.dtype)
            phi = g.chain[r]
            new_points.append((phi[j] + f[:, None] * (phi[j + 1] - phi[j]))[None])
        evaluated = self._evaluate(new_points)
        for (g, r, ins), pts, (nl, ng) in zip(rows, new_points, evaluated, strict=True):
            n = g.n
            # Old image i goes to i + (inserts before it); insert q sits after its segment's
            # start, i.e. at j + 1 + q in the new chain.
            seg = np.array([s for s, _ in ins])
            old_at = np.arange(n) + np.searchsorted(seg, np.arange(n), side="left")
            new_at = seg + 1 + np.arange(len(seg))
            size = n + len(seg)
            dev = g.chain.device
            chain = torch.empty(size, self.p, dtype=g.chain.dtype, device=dev)
            loss = torch.empty(size, dtype=g.loss.dtype, device=dev)
            u = torch.empty(size, dtype=g.u.dtype, device=dev)
            grad = torch.empty(size, self.p, dtype=g.grad.dtype, device=dev)
            o, w = torch.as_tensor(old_at, device=dev), torch.as_tensor(new_at, device=dev)
            chain[o], chain[w] = g.chain[r], pts[0]
            loss[o], loss[w] = g.loss[r], nl[0]
            grad[o[1:-1]], grad[w] = g.grad[r], ng[0]
            fj = torch.as_tensor([f for _, f in ins], dtype=g.u.dtype, device=dev)
            sj = torch.as_tensor(seg, device=dev)
            u[o], u[w] = g.u[r], g.u[r, sj] + fj * (g.u[r, sj + 1] - g.u[r, sj])
            one = slice(r, r + 1)
            kept.append(_Group(g.pairs[one], u[None], chain[None], loss[None], grad[None, 1:-1],
                               g.dt[one], g.dt0[one], g.climbing[one]))
        by_n: dict[int, list[_Group]] = {}
        for g in kept:
            by_n.setdefault(g.n, []).append(g)
        self.groups = [_Group.join(by_n[n]) if len(by_n[n]) > 1 else by_n[n][0]
                       for n in sorted(by_n)]

    # -- results
    def chains(self) -> list[Tensor]:
        """The final chains ``(n_m, P)`` in pair order."""
        out: list[Tensor | None] = [None] * self.m
        for g in self.groups:
            for row, pair in enumerate(g.pairs):
                out[pair] = g.chain[row]
        return [c for c in out if c is not None]

    def top_grad_norm(self) -> np.ndarray:
        """``(M,)`` gradient norm at the highest interior image of each final chain."""
        out = np.zeros(self.m)
        for g in self.groups:
            top = g.loss[:, 1:-1].argmax(dim=1)
            ar = torch.arange(len(g.pairs), device=g.chain.device)
            out[g.pairs] = g.grad[ar, top].norm(dim=-1).to(torch.float64).cpu().numpy()
        return out

    def climbing(self) -> np.ndarray:
        out = np.zeros(self.m, dtype=bool)
        for g in self.groups:
            out[g.pairs] = g.climbing.cpu().numpy()
        return out


# ---------------------------------------------------------------------------- the barrier
def _losses(land: Landscape, points: Tensor) -> np.ndarray:
    """Full-batch losses ``(M, q)`` (float64, NaN -> inf) of points ``(M, q, P)``."""
    m, q, p = points.shape
    loss, _ = land.evaluate_batch(points.reshape(m * q, p), land.x_eval, land.y_eval,
                                  grad=False)
    out = loss.detach().to(torch.float64).cpu().numpy().reshape(m, q)
    return np.where(np.isnan(out), np.inf, out)


def _polygon_maxima(land: Landscape, chain: Tensor, ends: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Maximum loss along each polygon ``chain (M, n, P)``: dense samples, then a batched
    golden-section search on the two segments around the highest sample.

    Returns ``(barriers (M,), top_t (M,), profile_t, profile_loss)``; ``ends (M, 2)`` are the
    endpoint losses (the barrier is never below them)."""
    m, n, _ = chain.shape
    u = (_arc(chain) / _arc(chain)[:, -1:]).to(torch.float64)  # vertices' positions
    frac = torch.arange(PROFILE_POINTS, dtype=torch.float64, device=chain.device) / PROFILE_POINTS
    t = (u[:, :-1, None] + frac * (u[:, 1:] - u[:, :-1])[..., None]).reshape(m, -1)
    t = torch.cat([t, u[:, -1:]], dim=1)
    loss = _losses(land, _at_positions(chain, t.to(chain.dtype)))
    ts = [t.cpu().numpy()]
    ls = [loss]
    t_np = ts[0]
    best = loss.argmax(axis=1)
    r = np.arange(m)
    lo = t_np[r, np.maximum(best - 1, 0)]
    hi = t_np[r, np.minimum(best + 1, t_np.shape[1] - 1)]
    # Golden section for a maximum: the bracket keeps the better interior point.
    x1, x2 = hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo)
    f12 = _losses(land, _at_positions(chain, torch.as_tensor(
        np.stack([x1, x2], axis=1), device=chain.device, dtype=chain.dtype)))
    f1, f2 = f12[:, 0].copy(), f12[:, 1].copy()
    ts.append(np.stack([x1, x2], axis=1))
    ls.append(f12)
    while np.max(hi - lo) > GOLDEN_TOL:
        left = f1 >= f2  # the maximum is in [lo, x2]
        hi = np.where(left, x2, hi)
        lo = np.where(left, lo, x1)
        x1n = np.where(left, hi - _GOLDEN * (hi - lo), x2)
        x2n = np.where(left, x1, lo + _GOLDEN * (hi - lo))
        probe = np.where(left, x1n, x2n)
        fp = _losses(land, _at_positions(chain, torch.as_tensor(
            probe[:, None], device=chain.device, dtype=chain.dtype)))[:, 0]
        f1, f2 = np.where(left, fp, f2), np.where(left, f1, fp)
        x1, x2 = x1n, x2n
        ts.append(probe[:, None])
        ls.append(fp[:, None])
    all_t, all_l = np.concatenate(ts, axis=1), np.concatenate(ls, axis=1)
    order = np.argsort(all_t, axis=1, kind="stable")
    prof_t = [np.clip(all_t[i, order[i]], 0.0, 1.0) for i in range(m)]
    prof_l = [all_l[i, order[i]] for i in range(m)]
    at = all_l.argmax(axis=1)
    top_t = np.clip(all_t[r, at], 0.0, 1.0)
    barriers = np.maximum(all_l[r, at], ends.max(axis=1))
    # If an endpoint's loss is the top (a monotone path), that is where the maximum sits.
    end_top = all_l[r, at] < ends.max(axis=1)
    top_t = np.where(end_top, np.where(ends[:, 0] >= ends[:, 1], 0.0, 1.0), top_t)
    return barriers, top_t, prof_t, prof_l
