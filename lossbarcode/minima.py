"""K minima of one loss landscape, trained together as one batched program, and certified.

:func:`find_minima` stacks the K parameter vectors into a ``(K, P)`` tensor and trains them all at
once, in two phases:

1. **Minibatch phase**: ``steps`` steps of SGD-with-momentum or Adam. One vmapped forward/backward
   (:meth:`Landscape.evaluate_batch`) gives all K gradients, and the optimizers run as batched
   tensor updates with per-network state (the same update rules as ``torch.optim.SGD`` /
   ``torch.optim.Adam``).
2. **Full-batch phase** (:func:`lbfgs`): batched L-BFGS on the landscape's evaluation set until
   each network's full-batch gradient norm is at most ``tol`` or it has taken ``polish_steps``
   iterations. Minibatch noise keeps SGD a distance away from any critical point; this phase
   brings each network onto one, and a network that reaches ``tol`` leaves the batch.

Each result is then checked (:func:`certify`): the smallest Hessian eigenvalue comes from
Lanczos on Hessian-vector products (:mod:`lossbarcode.curvature`). A network at a saddle
(eigenvalue < ``-tol``) steps along its direction of negative curvature and descends again, at
most ``SADDLE_ROUNDS`` times, so training does not end at saddles. A **certified minimum** has a
gradient norm <= ``tol``, no eigenvalue below ``-tol``, a loss clearly below its loss at
initialisation (else it is **stuck**: it did not learn) and did not diverge.

Each network draws its own minibatches: network ``i`` has seed ``seeds[i]``
(``seeds.network_seeds(seed, K)[i]``) for both its initialisation and its private
shuffling of the training set (a fresh permutation per epoch, the last incomplete batch
dropped). Network ``i`` therefore follows the same trajectory whatever K is.

Runs whose loss, gradient or parameters become NaN/inf are *diverged*: they are frozen at their
last finite parameters, reported in ``Minima.diverged`` with a warning, and their losses are
NaN; training of the others goes on. A run that ends with a higher training loss than it
started with (e.g. ``lr=1e3``: losses in the thousands) has diverged too, to large finite
values, and is reported and left out the same way. Downstream code (paths, barcodes) leaves them
out.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lossbarcode import choices
from lossbarcode._checks import check_int as _check_int
from lossbarcode._checks import check_nonnegative, check_positive
from lossbarcode.certificates import NOT_COMPUTED, certify
from lossbarcode.choices import (
    BATCH_SIZE,
    LANCZOS_ITERS,
    LBFGS_MEMORY,
    MINIMA_LR,
    MINIMA_TOL,
    MINIMA_TOL_MAX,
    OPTIMIZERS,
    SADDLE_ROUNDS,
    SCHEDULE,
    SCHEDULES,
    STUCK_RATIO,
)
from lossbarcode.curvature import lanczos_bytes, smallest_eigenpairs
from lossbarcode.landscape import HVP_FACTOR, Landscape
from lossbarcode.seeds import derive_seed, network_seeds

DEFAULT_LR = MINIMA_LR  # kept for compatibility: the training rates, choices.MINIMA_LR
Progress = Callable[[int, int, float], Any]


@dataclass(frozen=True, eq=False)
class Minima:
    """K trained networks (local minima), how they were made and whether they are minima.

    Attributes:
        thetas: ``(K, P)`` float tensor on the CPU, the final parameters.
        train_loss: ``(K,)`` mean loss on the landscape's evaluation set (the full training set
            unless the landscape has an ``eval_subset``); NaN where diverged.
        test_loss: ``(K,)``; NaN where diverged or without a test set.
        test_error: ``(K,)`` fraction wrong; NaN for regression, diverged runs, no test set.
        diverged: ``(K,)`` bool, True for runs that hit NaN/inf or ended above their initial
            loss (exclude them downstream).
        seeds: ``(K,)`` int64, each network's initialisation/shuffling seed.
        history_steps: ``(R,)`` steps at which minibatch losses were recorded.
        history_loss: ``(R, K)`` minibatch training loss of each network at those steps.
        grad_norm: ``(K,)`` norm of each network's full gradient of the evaluation-set loss
            at its final parameters (how close to a critical point it is; NaN where diverged
            or unknown).
        optimizer, lr, schedule, steps, batch_size, momentum, weight_decay, seed,
        polish_steps: the settings (``polish_steps``: the cap of the full-batch phase).
        tol: the certificate's tolerance on the gradient norm and on negative curvature.
        hessian_min_eig: ``(K,)`` float64 smallest Hessian eigenvalue (Lanczos Ritz value, an
            upper bound on it); NaN where not computed.
        curvature_skipped: ``""`` when the curvature was checked, else why not (then the
            minima are gradient-certified only, and not certified).
        stuck: ``(K,)`` bool, did not learn: final loss not clearly below the initial one.
        initial_loss: ``(K,)`` float64 evaluation-set loss at initialisation (NaN: unknown).
        polish_steps_used: ``(K,)`` int64 full-batch iterations each network took (all saddle
            escape rounds together).
        certified: ``(K,)`` bool, :func:`certify` of the fields above.

    The certificate fields default to "unknown": no eigenvalues, not certified.
    """

    thetas: Tensor
    train_loss: np.ndarray
    test_loss: np.ndarray
    test_error: np.ndarray
    diverged: np.ndarray
    seeds: np.ndarray
    history_steps: np.ndarray
    history_loss: np.ndarray
    optimizer: str
    lr: float
    schedule: str
    steps: int
    batch_size: int
    momentum: float
    weight_decay: float
    seed: int
    grad_norm: np.ndarray
    polish_steps: int = 0
    tol: float = MINIMA_TOL
    hessian_min_eig: np.ndarray = field(default=None)  # type: ignore[assignment]
    curvature_skipped: str = NOT_COMPUTED
    stuck: np.ndarray = field(default=None)  # type: ignore[assignment]
    initial_loss: np.ndarray = field(default=None)  # type: ignore[assignment]
    polish_steps_used: np.ndarray = field(default=None)  # type: ignore[assignment]
    certified: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        k = int(self.thetas.shape[0])
        defaults = {"hessian_min_eig": np.full(k, np.nan), "stuck": np.zeros(k, dtype=bool),
                    "initial_loss": np.full(k, np.nan),
                    "polish_steps_used": np.zeros(k, dtype=np.int64),
                    "certified": np.zeros(k, dtype=bool)}
        for name, value in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)

    @property
    def k(self) -> int:
        return int(self.thetas.shape[0])

    @property
    def n_params(self) -> int:
        return int(self.thetas.shape[1])

    @property
    def valid(self) -> np.ndarray:
        """Indices of the minima that did not diverge, shape ``(K_valid,)``."""
        return np.flatnonzero(~self.diverged)

    def certificate_reasons(self) -> list[str]:
        """Why each minimum is not certified (``""`` where it is), one string per minimum."""
        return certify(self.grad_norm, self.hessian_min_eig, self.stuck, self.diverged,
                       self.tol, train_loss=self.train_loss, initial_loss=self.initial_loss,
                       curvature_skipped=self.curvature_skipped)[1]

    def config(self) -> dict[str, Any]:
        """The training settings as a JSON-safe dict."""
        return {
            "k": self.k, "optimizer": self.optimizer, "lr": self.lr, "schedule": self.schedule,
            "steps": self.steps, "batch_size": self.batch_size, "momentum": self.momentum,
            "weight_decay": self.weight_decay, "seed": self.seed,
            "polish_steps": self.polish_steps, "tol": self.tol,
        }

    def to_arrays(self) -> dict[str, np.ndarray]:
        """All fields as numpy arrays (for ``np.savez``; settings as 0-d arrays)."""
        out = {
            "thetas": self.thetas.detach().cpu().numpy(),
            "train_loss": self.train_loss, "test_loss": self.test_loss,
            "test_error": self.test_error, "diverged": self.diverged, "seeds": self.seeds,
            "history_steps": self.history_steps, "history_loss": self.history_loss,
            "grad_norm": self.grad_norm, "hessian_min_eig": self.hessian_min_eig,
            "curvature_skipped": np.asarray(self.curvature_skipped), "stuck": self.stuck,
            "initial_loss": self.initial_loss, "polish_steps_used": self.polish_steps_used,
            "certified": self.certified,
        }
        out.update({key: np.asarray(v) for key, v in self.config().items() if key != "k"})
        return out

    @classmethod
    def from_arrays(cls, arrays: Any) -> Minima:
        """Inverse of :meth:`to_arrays` (accepts a dict or an ``np.load`` result). Arrays
        without the certificate (stored before it existed) are refused: recompute them."""
        try:
            a = {key: np.asarray(arrays[key]) for key in _ARRAY_FIELDS}
        except KeyError as exc:
            raise ValueError(f"minima arrays lack field {exc}; were they written by "
                             "Minima.to_arrays? (minima stored before certificates existed "
                             "must be recomputed)") from exc
        _check_arrays(a)
        return cls(
            thetas=torch.as_tensor(a["thetas"]),
            train_loss=a["train_loss"].astype(np.float64),
            test_loss=a["test_loss"].astype(np.float64),
            test_error=a["test_error"].astype(np.float64),
            diverged=a["diverged"].astype(bool),
            seeds=a["seeds"].astype(np.int64),
            history_steps=a["history_steps"].astype(np.int64),
            history_loss=a["history_loss"].astype(np.float64),
            optimizer=str(a["optimizer"]), lr=float(a["lr"]), schedule=str(a["schedule"]),
            steps=int(a["steps"]), batch_size=int(a["batch_size"]),
            momentum=float(a["momentum"]), weight_decay=float(a["weight_decay"]),
            seed=int(a["seed"]), grad_norm=a["grad_norm"].astype(np.float64),
            polish_steps=int(a["polish_steps"]), tol=float(a["tol"]),
            hessian_min_eig=a["hessian_min_eig"].astype(np.float64),
            curvature_skipped=str(a["curvature_skipped"]), stuck=a["stuck"].astype(bool),
            initial_loss=a["initial_loss"].astype(np.float64),
            polish_steps_used=a["polish_steps_used"].astype(np.int64),
            certified=a["certified"].astype(bool),
        )


def _check_arrays(a: dict[str, np.ndarray]) -> None:
    """``ValueError`` unless stored minima arrays fit together: (K, P) finite float thetas,
    (K,) per-minimum columns of the right kind, (R, K) history, numeric 0-d settings, and a
    ``certified`` column that :func:`certify` reproduces."""
    thetas = a["thetas"]
    if thetas.ndim != 2 or thetas.shape[0] < 1 or thetas.shape[1] < 1 or not np.issubdtype(
            thetas.dtype, np.floating):
        raise ValueError(f"thetas must be a (K, P) float array, got {thetas.dtype} "
                         f"{thetas.shape}")
    k = thetas.shape[0]
    if not np.all(np.isfinite(thetas)):
        raise ValueError("thetas hold NaN or infinite parameters")
    for name in ("train_loss", "test_loss", "test_error", "diverged", "seeds", "grad_norm",
                 "hessian_min_eig", "stuck", "initial_loss", "polish_steps_used", "certified"):
        if a[name].shape != (k,):
            raise ValueError(f"{name} must have shape ({k},), got {a[name].shape}")
    for name in ("diverged", "stuck", "certified"):
        if a[name].dtype != bool:
            raise ValueError(f"{name} must be a bool array, got {a[name].dtype}")
    for name in ("train_loss", "test_loss", "test_error", "grad_norm", "hessian_min_eig",
                 "initial_loss"):
        if not np.issubdtype(a[name].dtype, np.floating):
            raise ValueError(f"{name} must be a float array, got {a[name].dtype}")
    if not np.issubdtype(a["polish_steps_used"].dtype, np.integer) or np.any(
            a["polish_steps_used"] < 0):
        raise ValueError("polish_steps_used must hold integers >= 0")
    steps = a["history_steps"]
    if steps.ndim != 1 or a["history_loss"].shape not in ((steps.shape[0], k), (0,)):
        raise ValueError(f"history_loss must have shape ({steps.shape[0]}, {k}), got "
                         f"{a['history_loss'].shape}")
    for name in ("lr", "steps", "batch_size", "momentum", "weight_decay", "seed",
                 "polish_steps", "tol"):
        if a[name].shape != () or not np.issubdtype(a[name].dtype, np.number):
            raise ValueError(f"{name} must be a number, got {a[name]!r}")
    if not 0 < float(a["tol"]) <= MINIMA_TOL_MAX:
        raise ValueError(f"tol must lie in (0, {MINIMA_TOL_MAX:g}], got {a['tol']!r}")
    if a["curvature_skipped"].shape != () or a["curvature_skipped"].dtype.kind != "U":
        raise ValueError("curvature_skipped must be a string")
    cert = certify(a["grad_norm"], a["hessian_min_eig"], a["stuck"], a["diverged"],
                   float(a["tol"]), curvature_skipped=str(a["curvature_skipped"]))[0]
    if not np.array_equal(cert, a["certified"]):
        raise ValueError("certified disagrees with the gradient norms, eigenvalues and flags "
                         "it is made of (edited?)")


_ARRAY_FIELDS = (
    "thetas", "train_loss", "test_loss", "test_error", "diverged", "seeds", "history_steps",
    "history_loss", "optimizer", "lr", "schedule", "steps", "batch_size", "momentum",
    "weight_decay", "seed", "grad_norm", "polish_steps", "tol", "hessian_min_eig",
    "curvature_skipped", "stuck", "initial_loss", "polish_steps_used", "certified",
)


# ----------------------------------------------------------------------------- the certificate


def stuck_mask(train_loss: Any, initial_loss: Any, diverged: Any) -> np.ndarray:
    """``(K,)`` bool: networks that did not learn, i.e. (not diverged and) whose final loss is
    not below their initial loss by at least ``(1 - STUCK_RATIO) * |initial|`` (for a loss
    >= 0: final > ``STUCK_RATIO`` x initial, or no lower at all). NaN losses count as stuck
    unless diverged."""
    final = np.asarray(train_loss, dtype=np.float64)
    start = np.asarray(initial_loss, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        learned = (final < start) & (final <= start - (1.0 - STUCK_RATIO) * np.abs(start))
    return ~np.asarray(diverged, dtype=bool) & ~learned


# ----------------------------------------------------------------------------- defaults


def landscape_arch(landscape: Landscape) -> str | None:
    """The built-in family of the landscape's model (``models.build`` records it), or
    ``None`` for any other model."""
    spec = getattr(landscape.module, "spec", None)
    arch = getattr(spec, "arch", None)
    return arch if isinstance(arch, str) else None


def lr_at(step: int, steps: int, lr: float, schedule: str) -> float:
    """Learning rate at ``step`` (0-based) of ``steps``: constant, or cosine decay from ``lr``
    to 0 over the run ("anneal")."""
    if schedule == "constant":
        return lr
    return 0.5 * lr * (1.0 + math.cos(math.pi * step / max(1, steps)))


def check_tol(tol: Any) -> float:
    """``tol`` as a float if it lies in ``(0, MINIMA_TOL_MAX]``; else ``ValueError`` naming it
    (a larger tolerance would certify almost any point)."""
    if isinstance(tol, bool) or not isinstance(tol, int | float | np.integer | np.floating) \
            or not math.isfinite(tol) or not 0 < tol <= MINIMA_TOL_MAX:
        raise ValueError(f"tol must be a finite number in (0, {MINIMA_TOL_MAX:g}] (the "
                         f"gradient norm and negative curvature a minimum may have), got {tol!r}")
    return float(tol)


# ----------------------------------------------------------------------------- training


def find_minima(
    landscape: Landscape,
    k: int,
    optimizer: str | None = None,
    lr: float | None = None,
    schedule: str = SCHEDULE,
    steps: int | None = None,
    batch_size: int = BATCH_SIZE,
    seed: int = 0,
    momentum: float = 0.9,
    *,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    record_every: int | None = None,
    progress: Progress | None = None,
    polish_steps: int | None = None,
    tol: float = MINIMA_TOL,
    lanczos_iters: int = LANCZOS_ITERS,
    saddle_rounds: int = SADDLE_ROUNDS,
) -> Minima:
    """Train ``k`` networks from ``k`` seeds together, drive them to critical points and
    certify them; return their final parameters, losses and certificates.

    Args:
        landscape: the loss to minimise (:class:`~lossbarcode.landscape.Landscape`).
        k: number of minima, at least 2.
        optimizer: ``"sgd"`` (heavy-ball momentum, as ``torch.optim.SGD``) or ``"adam"``;
            default: the model family's (:func:`lossbarcode.choices.training`).
        lr: peak learning rate; default: the family's when ``optimizer`` is its optimizer,
            else ``choices.MINIMA_LR[optimizer]``.
        schedule: ``"constant"`` or ``"anneal"`` (cosine decay to 0 over ``steps``).
        steps: minibatch optimizer steps per network; default: the family's.
        batch_size: examples per minibatch (capped at the training-set size; full-batch
            gradient descent when it covers the whole set).
        seed: derives the per-network seeds (see module docstring).
        momentum: SGD momentum (ignored by Adam, which uses ``betas``).
        weight_decay: L2 penalty added to the minibatch gradient (as ``torch.optim``), default
            0. The full-batch phase and the certificate are about the plain training loss.
        record_every: record minibatch losses every this many steps (default ``steps // 100``).
        progress: called as ``progress(step, steps, mean_loss)`` at every record of the
            minibatch phase (``mean_loss`` over the networks that have not diverged), then as
            ``progress(steps, steps, mean_full_batch_loss)`` after every full-batch iteration
            (so a callback that raises stops the run there too).
        polish_steps: the cap on full-batch L-BFGS iterations per network per round (an int
            >= 1); default: the family's.
        tol: a network's full-batch phase stops when its gradient norm is <= ``tol``; the
            certificate allows this gradient norm and eigenvalues down to ``-tol``. In
            ``(0, MINIMA_TOL_MAX]``.
        lanczos_iters: Hessian-vector products per network for its smallest eigenvalue.
        saddle_rounds: at most this many escapes from a saddle (0: none).

    Returns:
        :class:`Minima` with parameters on the CPU, per-network train/test metrics and the
        certificate (``certified``, ``stuck``, ``hessian_min_eig``...).
    """
    if optimizer is not None and optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    optimizer, lr, steps, polish_steps = choices.training(
        landscape_arch(landscape), optimizer, lr, steps, polish_steps)
    k, batch_size = _check_int(k, "k", 2), _check_int(batch_size, "batch_size", 1)
    steps = _check_int(steps, "steps", 1)
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    lr = check_positive(lr, "lr")
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
        raise ValueError(f"betas must lie in [0, 1), got {betas}")
    weight_decay = check_nonnegative(weight_decay, "weight_decay")
    seed = _check_int(seed, "seed", 0)
    polish_steps = _check_int(polish_steps, "polish_steps", 1)
    tol = check_tol(tol)
    lanczos_iters = _check_int(lanczos_iters, "lanczos_iters", 1)
    saddle_rounds = _check_int(saddle_rounds, "saddle_rounds", 0)
    record_every = max(1, steps // 100) if record_every is None else _check_int(
        record_every, "record_every", 1)

    seeds = network_seeds(seed, k)
    thetas = landscape.init_from_seeds(seeds)
    initial_loss = landscape.loss(thetas).to("cpu", torch.float64).numpy()
    thetas, active, hist_steps, hist_loss = train_minibatch(
        landscape, thetas, seeds, optimizer, lr, schedule, steps, batch_size, momentum, betas,
        eps, weight_decay, record_every, progress)
    dev = landscape.device

    def report(_iteration: int, full_loss: Tensor) -> None:
        if progress is not None:
            ok = torch.isfinite(full_loss)
            if ok.shape == active.shape:  # all K rows (an escape round passes its own)
                ok &= active
            progress(steps, steps, float(full_loss[ok].mean()) if bool(ok.any())
                     else float("nan"))

    descent = lbfgs(landscape, thetas, tol, polish_steps, active=active, callback=report)
    thetas, used = descent.thetas, descent.steps.clone()
    loss_full, grad_norm_t = descent.loss, descent.grad_norm
    active &= torch.isfinite(loss_full) & torch.isfinite(grad_norm_t)

    # Curvature: Lanczos on every network that did not diverge, then escape saddles.
    eig = torch.full((k,), float("nan"), dtype=torch.float64, device=dev)
    skipped = _curvature_problem(landscape, lanczos_iters)
    if not skipped:
        rows = active.clone()
        for rnd in range(saddle_rounds + 1):
            idx = torch.nonzero(rows).squeeze(1)
            if idx.numel() == 0:
                break
            values, vectors = _eigenpairs(landscape, thetas[idx], lanczos_iters, seed=rnd)
            eig[idx] = values
            saddle = (values < -tol) & (grad_norm_t[idx] <= tol)
            if rnd == saddle_rounds or not bool(saddle.any()):
                break
            sid = idx[saddle]
            moved, escaped = escape_saddles(landscape, thetas[sid], loss_full[sid],
                                            vectors[saddle], values[saddle])
            sid, moved = sid[escaped], moved[escaped]
            if sid.numel() == 0:
                break
            again = lbfgs(landscape, moved, tol, polish_steps, callback=report)
            thetas[sid], loss_full[sid] = again.thetas, again.loss
            grad_norm_t[sid] = again.grad_norm
            used[sid] += again.steps
            rows = torch.zeros_like(rows)
            rows[sid] = torch.isfinite(again.loss) & torch.isfinite(again.grad_norm)
            active[sid] &= rows[sid]

    train_loss = loss_full.to("cpu", torch.float64).numpy().copy()
    grad_norm = grad_norm_t.to("cpu", torch.float64).numpy().copy()
    hessian_min_eig = eig.cpu().numpy()
    if landscape.x_test is not None:
        tl, te = landscape.test_metrics(thetas)
        test_loss = tl.to("cpu", torch.float64).numpy()
        test_error = (np.full(k, np.nan) if te is None
                      else te.to("cpu", torch.float64).numpy())
    else:
        test_loss, test_error = np.full(k, np.nan), np.full(k, np.nan)
    # Not a minimum if training made the loss worse than at the random start.
    worse = np.isfinite(train_loss) & (train_loss > initial_loss)
    diverged = ~active.cpu().numpy() | ~np.isfinite(train_loss) | worse
    if diverged.any():
        rose = "".join(f"; run {i}: loss {initial_loss[i]:.4g} at the start, "
                       f"{train_loss[i]:.4g} at the end" for i in np.flatnonzero(worse)[:3])
        warnings.warn(
            f"{int(diverged.sum())} of {k} training runs diverged (NaN/inf, or a final loss "
            f"above the initial one) and are excluded: indices "
            f"{np.flatnonzero(diverged).tolist()}{rose}; lower lr ({lr:g}) if this is "
            "unexpected",
            RuntimeWarning,
            stacklevel=2,
        )
        for arr in (train_loss, test_loss, test_error, grad_norm, hessian_min_eig):
            arr[diverged] = np.nan
    stuck = stuck_mask(train_loss, initial_loss, diverged)
    if stuck.any():
        warnings.warn(
            f"{int(stuck.sum())} of {k} networks did not learn (their loss stayed near its "
            f"start, e.g. at chance): indices {np.flatnonzero(stuck).tolist()}; they are not "
            f"minima of interest and are not certified; change lr ({lr:g}) or the optimizer",
            RuntimeWarning, stacklevel=2)
    certified, _ = certify(grad_norm, hessian_min_eig, stuck, diverged, tol,
                           curvature_skipped=skipped)
    return Minima(
        thetas=thetas.detach().cpu(),
        train_loss=train_loss,
        test_loss=test_loss,
        test_error=test_error,
        diverged=diverged,
        seeds=seeds,
        history_steps=np.asarray(hist_steps, dtype=np.int64),
        history_loss=torch.stack(hist_loss).numpy() if hist_loss else np.zeros((0, k)),
        optimizer=optimizer,
        lr=lr,
        schedule=schedule,
        steps=steps,
        batch_size=min(batch_size, landscape.n_train),
        momentum=float(momentum),
        weight_decay=float(weight_decay),
        seed=int(seed),
        grad_norm=grad_norm,
        polish_steps=polish_steps,
        tol=tol,
        hessian_min_eig=hessian_min_eig,
        curvature_skipped=skipped,
        stuck=stuck,
        initial_loss=initial_loss,
        polish_steps_used=used.cpu().numpy().astype(np.int64),
        certified=certified,
    )


def train_minibatch(landscape: Landscape, thetas: Tensor, seeds: np.ndarray, optimizer: str,
                    lr: float, schedule: str, steps: int, batch_size: int, momentum: float,
                    betas: tuple[float, float], eps: float, weight_decay: float,
                    record_every: int, progress: Progress | None,
                    ) -> tuple[Tensor, Tensor, list[int], list[Tensor]]:
    """The first phase of :func:`find_minima` from ``thetas`` ``(K, P)``: the final
    parameters, ``(K,)`` bool rows still finite, and the recorded steps and ``(K,)`` minibatch
    losses."""
    k, dev = thetas.shape[0], landscape.device
    sampler = _Sampler(landscape.n_train, batch_size, seeds, dev)
    state = BatchedOptimizer.create(optimizer, thetas, momentum, betas, eps)
    active = torch.ones(k, dtype=torch.bool, device=dev)
    hist_steps: list[int] = []
    hist_loss: list[Tensor] = []
    for step in range(steps):
        idx, per_vector = sampler.next()
        x, y = landscape.gather(idx)
        loss, grad = landscape.evaluate_batch(thetas, x, y, per_vector=per_vector, grad=True)
        assert grad is not None
        if weight_decay:
            grad = grad + weight_decay * thetas
        new = state.step(thetas, grad, lr_at(step, steps, lr, schedule))
        # Divergence bookkeeping stays on the device (no host sync per step). A row sum is
        # non-finite iff the row holds a NaN/inf (or overflows, which is divergence too).
        active &= torch.isfinite(loss + new.sum(dim=1))
        # Rows never mix, so a diverged row's NaN state cannot leak into the others; freezing
        # its parameters at the last finite values is all that is needed.
        thetas = torch.where(active[:, None], new, thetas)
        if step % record_every == 0 or step == steps - 1:
            loss_cpu = loss.detach().to("cpu", torch.float64)
            hist_steps.append(step)
            hist_loss.append(loss_cpu)
            if progress is not None:
                act = active.cpu()
                progress(step + 1, steps,
                         float(loss_cpu[act].mean()) if bool(act.any()) else float("nan"))
    return thetas, active, hist_steps, hist_loss


def _curvature_problem(landscape: Landscape, iters: int) -> str:
    """Why the Lanczos check cannot run within the landscape's memory limit, or ``""``: one
    Hessian-vector product of one network on one example, plus the basis of one network."""
    hvp_one = landscape._cost(1, 1, grad=True, factor=HVP_FACTOR)
    need = hvp_one + lanczos_bytes(landscape, 1, iters)
    if need > landscape.memory_limit:
        return (f"the curvature check needs about {need / 2**20:.0f} MiB for one network, over "
                f"the memory limit of {landscape.memory_limit / 2**20:.0f} MiB")
    return ""


def _eigenpairs(landscape: Landscape, thetas: Tensor, iters: int,
                seed: int) -> tuple[Tensor, Tensor]:
    """:func:`smallest_eigenpairs` of the rows of ``thetas`` ``(R, P)``, in groups of rows
    whose Lanczos bases fit half the memory limit (the other half is for the products)."""
    per_row = max(1, lanczos_bytes(landscape, 1, iters))
    group = max(1, int(landscape.memory_limit // 2 // per_row))
    values, vectors = [], []
    for r0 in range(0, thetas.shape[0], group):
        v, u = smallest_eigenpairs(landscape, thetas[r0 : r0 + group], iters, seed=seed)
        values.append(v)
        vectors.append(u)
    return torch.cat(values), torch.cat(vectors)


def escape_saddles(landscape: Landscape, thetas: Tensor, loss: Tensor, directions: Tensor,
                   eigenvalues: Tensor) -> tuple[Tensor, Tensor]:
    """Steps from saddles along their directions of negative curvature.

    At a critical point the loss along a unit direction ``v`` with curvature ``lam < 0`` is
    ``f + lam a^2 / 2`` to second order. Each row tries both signs of ``v`` at step sizes
    ``a = 1, 1/2, ..., 2^-(ESCAPE_TRIALS - 1)``, largest first (both signs of all rows in one
    loss evaluation per size), and takes the first size at which a sign realises at least half
    of that predicted decrease (the sign with the lower loss if both do): Armijo's sufficient
    decrease test, on the second-order term. Largest first because a longer step leaves the
    saddle's neighbourhood more surely, and the loss often keeps falling beyond the range
    where the quadratic model holds; unit length is the largest step because the curvature
    was measured along a unit vector.

    Args:
        thetas: ``(R, P)`` points; loss: ``(R,)`` their losses; directions: ``(R, P)`` unit
            vectors; eigenvalues: ``(R,)`` their (negative) curvatures.

    Returns:
        new points ``(R, P)`` (unchanged where no step qualified) and ``(R,)`` bool, whether
        the row moved.
    """
    r = thetas.shape[0]
    new = thetas.clone()
    moved = torch.zeros(r, dtype=torch.bool, device=thetas.device)
    lam = eigenvalues.to(thetas.dtype)
    for i in range(ESCAPE_TRIALS):
        idx = torch.nonzero(~moved).squeeze(1)
        if idx.numel() == 0:
            break
        a = 0.5**i
        trial = torch.cat([thetas[idx] + a * directions[idx], thetas[idx] - a * directions[idx]])
        f = landscape.loss(trial).view(2, -1)
        good = torch.isfinite(f) & (f <= loss[idx] + 0.25 * lam[idx] * a * a)
        f = torch.where(good, f, torch.full_like(f, float("inf")))
        sign = f.argmin(dim=0)  # 0: +v, 1: -v
        ok = good.any(dim=0)
        pick = trial.view(2, idx.numel(), -1)[sign, torch.arange(idx.numel(), device=idx.device)]
        new[idx[ok]] = pick[ok]
        moved[idx[ok]] = True
    return new, moved


ESCAPE_TRIALS = 20  # step sizes 1 .. 2^-19 along a direction of negative curvature


# ----------------------------------------------------------------------------- full batch


@dataclass(frozen=True, eq=False)
class Descent:
    """Where :func:`lbfgs` left a ``(K, P)`` stack.

    Attributes:
        thetas: ``(K, P)`` final points (a new tensor).
        loss: ``(K,)`` evaluation-set loss there; grad: ``(K, P)`` its gradient.
        grad_norm: ``(K,)`` float64 norms of ``grad``.
        steps: ``(K,)`` int64 iterations each row took.
        converged: ``(K,)`` bool, ``grad_norm <= tol``.
        evaluations: batched loss-and-gradient calls made (each on the rows that needed one).
    """

    thetas: Tensor
    loss: Tensor
    grad: Tensor
    grad_norm: Tensor
    steps: Tensor
    converged: Tensor
    evaluations: int


_C1 = 1e-4  # Armijo's sufficient-decrease constant (the customary value)
LINE_SEARCH_TRIALS = 20  # step halvings (or more) per line search before giving up


def lbfgs(landscape: Landscape, thetas: Tensor, tol: float, max_steps: int, *,
          active: Tensor | None = None, memory: int = LBFGS_MEMORY,
          callback: Callable[[int, Tensor], Any] | None = None) -> Descent:
    """Batched L-BFGS on the evaluation-set loss until each row's gradient norm is <= ``tol``.

    Every row is its own L-BFGS run: its own ``memory`` (s, y) pairs, two-loop recursion and
    step length, all as ``(K, P)`` tensor operations; the line-search trials of all rows that
    are still searching are evaluated in one call. A pair with ``s . y <= eps |s| |y|`` (no
    positive curvature seen) is skipped, which keeps each row's inverse-Hessian estimate
    positive definite, so every direction is downhill.

    Line search: backtracking from the full quasi-Newton step (``t = 1``) with Armijo's test
    ``f(x + t d) <= f + 1e-4 t g.d``, each new trial at the minimiser of the quadratic through
    ``f``, ``g.d`` and the rejected value (kept in ``[0.1 t, 0.5 t]``). Near a minimum the loss
    changes less than its rounding error, so a step is also accepted when the loss rose by at
    most 16 ulps and the slope along the step shrank (Hager and Zhang's approximate Armijo
    condition); in float32 this is what lets the gradient fall to ~1e-4. A row whose search
    fails forgets its pairs and retries along the gradient; if that fails too it stops.

    Rows that reach ``tol`` stop (and are not evaluated again); rows with NaN/inf loss or
    gradient never run, and trial points that are NaN/inf are rejected, so no row's numbers
    reach another's.

    Args:
        landscape: the loss; ``thetas``: ``(K, P)`` start points.
        tol: gradient-norm target; max_steps: iterations per row at most.
        active: ``(K,)`` bool, rows to optimise (default all); the others stay as they are.
        memory: (s, y) pairs kept per row (fewer if they would not fit a quarter of the
            landscape's memory limit).
        callback: called as ``callback(iteration, loss (K,))`` after every iteration.

    Returns:
        :class:`Descent`.
    """
    thetas = landscape.as_thetas(thetas).clone()
    k, p = thetas.shape
    dev, dt = thetas.device, thetas.dtype
    x, y = landscape.x_eval, landscape.y_eval
    eps = torch.finfo(dt).eps
    loss, grad = landscape.evaluate_batch(thetas, x, y)
    assert grad is not None
    finite = torch.isfinite(loss) & torch.isfinite(grad).all(dim=1)
    run = finite if active is None else finite & active.to(dev)
    gnorm = grad.to(torch.float64).norm(dim=1)
    run &= gnorm > tol
    steps = torch.zeros(k, dtype=torch.long, device=dev)
    evaluations = 1
    m = _history_size(landscape, k, memory)
    s_hist = torch.zeros(m, k, p, dtype=dt, device=dev)
    y_hist = torch.zeros_like(s_hist)
    rho = torch.zeros(m, k, dtype=dt, device=dev)  # 1 / (s . y); 0 marks an empty slot
    newest = m - 1  # ring position of the newest pair, shared by all rows
    for it in range(max_steps):
        if not bool(run.any()):
            break
        d = _two_loop(grad, s_hist, y_hist, rho, newest)
        gd = (grad * d).sum(dim=1)
        # Rounding can still make a direction uphill: that row forgets its pairs.
        uphill = run & ~(gd < 0)
        if bool(uphill.any()):
            rho[:, uphill] = 0
            d = torch.where(uphill[:, None], -_scaled(grad), d)
            gd = (grad * d).sum(dim=1)
        had_pairs = (rho != 0).any(dim=0)
        new_x, new_loss, new_grad, accepted, calls = _line_search(landscape, thetas, loss,
                                                                  grad, d, gd, run)
        evaluations += calls
        s, yv = new_x - thetas, new_grad - grad
        sy = (s * yv).sum(dim=1)
        keep = accepted & (sy > eps * s.norm(dim=1) * yv.norm(dim=1))
        newest = (newest + 1) % m
        s_hist[newest] = torch.where(keep[:, None], s, 0.0)
        y_hist[newest] = torch.where(keep[:, None], yv, 0.0)
        rho[newest] = torch.where(keep, 1.0 / torch.where(keep, sy, 1.0), 0.0)
        thetas, loss, grad = new_x, new_loss, new_grad
        steps += run.long()
        failed = run & ~accepted
        rho[:, failed] = 0
        run &= ~(failed & ~had_pairs)  # even the gradient direction found no lower loss
        gnorm = grad.to(torch.float64).norm(dim=1)
        run &= gnorm > tol
        if callback is not None:
            callback(it + 1, loss)
    return Descent(thetas=thetas, loss=loss, grad=grad, grad_norm=gnorm, steps=steps,
                   converged=gnorm <= tol, evaluations=evaluations)


def _history_size(landscape: Landscape, k: int, memory: int) -> int:
    """Pairs per row whose ``2 * m * K * P`` history fits a quarter of the memory limit."""
    per_pair = 2 * k * landscape.n_params * (torch.finfo(landscape.dtype).bits // 8)
    return max(1, min(int(memory), int(landscape.memory_limit // 4 // max(per_pair, 1))))


def _scaled(grad: Tensor) -> Tensor:
    """``grad`` ``(K, P)`` scaled to length at most 1 per row: the first step of a row without
    curvature pairs (the line search shortens it if needed)."""
    norm = grad.norm(dim=1, keepdim=True)
    return grad / torch.clamp(norm, min=1.0)


def _two_loop(grad: Tensor, s_hist: Tensor, y_hist: Tensor, rho: Tensor,
              newest: int) -> Tensor:
    """L-BFGS directions ``-H_k grad`` ``(K, P)`` by the two-loop recursion, per row: empty
    slots (``rho == 0``) drop out of both loops. The initial matrix is ``gamma I`` with
    ``gamma = s.y / y.y`` of the row's newest pair; a row without pairs gets
    ``-_scaled(grad)``."""
    m, k = rho.shape
    order = [(newest - i) % m for i in range(m)]  # newest first
    q = grad.clone()
    alphas = []
    for j in order:
        a = rho[j] * (s_hist[j] * q).sum(dim=1)
        q -= a[:, None] * y_hist[j]
        alphas.append(a)
    gamma = torch.zeros(k, dtype=grad.dtype, device=grad.device)
    found = torch.zeros(k, dtype=torch.bool, device=grad.device)
    for j in order:
        has = (rho[j] != 0) & ~found
        yy = (y_hist[j] * y_hist[j]).sum(dim=1)
        gamma = torch.where(has, 1.0 / torch.where(has, rho[j] * yy, 1.0), gamma)
        found |= has
    r = torch.where(found[:, None], gamma[:, None] * q, _scaled(grad))
    for j, a in zip(reversed(order), reversed(alphas), strict=True):
        b = rho[j] * (y_hist[j] * r).sum(dim=1)
        r += s_hist[j] * (a - b)[:, None]
    return -r


def _line_search(landscape: Landscape, thetas: Tensor, loss: Tensor, grad: Tensor, d: Tensor,
                 gd: Tensor, run: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
    """Backtracking line search along ``d`` for the rows in ``run`` (see :func:`lbfgs`).
    Returns the new points, losses, gradients (the old ones where rejected), ``(K,)``
    whether each row's step was accepted, and the number of batched evaluations."""
    x, y = landscape.x_eval, landscape.y_eval
    eps = torch.finfo(thetas.dtype).eps
    t = torch.ones_like(loss)
    new_x, new_loss, new_grad = thetas.clone(), loss.clone(), grad.clone()
    accepted = torch.zeros_like(run)
    searching = run.clone()
    slack = 16 * eps * loss.abs()  # the loss's rounding error (approximate Armijo)
    calls = 0
    for _ in range(LINE_SEARCH_TRIALS):
        idx = torch.nonzero(searching).squeeze(1)
        if idx.numel() == 0:
            break
        calls += 1
        ti, f0, g0, di = t[idx], loss[idx], gd[idx], d[idx]
        trial = thetas[idx] + ti[:, None] * di
        f, g = landscape.evaluate_batch(trial, x, y)
        assert g is not None
        finite = torch.isfinite(f) & torch.isfinite(g).all(dim=1)
        armijo = f <= f0 + _C1 * ti * g0
        flat = (f <= f0 + slack[idx]) & ((g * di).sum(dim=1).abs() <= g0.abs())
        good = finite & (armijo | flat)
        won = idx[good]
        new_x[won], new_loss[won], new_grad[won] = trial[good], f[good], g[good]
        accepted[won] = True
        searching[won] = False
        # Next trial: the minimiser of the quadratic through f0, g0 (slope) and f at ti.
        curv = 2 * (f - f0 - g0 * ti)
        quad = -g0 * ti * ti / torch.where(curv > 0, curv, 1.0)
        quad = torch.where(finite & (curv > 0), quad, 0.25 * ti)
        t[idx] = torch.clamp(torch.minimum(quad, 0.5 * ti), min=0.1 * ti)
    return new_x, new_loss, new_grad, accepted, calls


class _Sampler:
    """Per-network minibatch indices: each network shuffles the training set with its own
    generator every epoch. Yields ``(K, batch)`` index tensors, or a shared ``(n,)`` range when
    one batch covers the whole training set."""

    def __init__(self, n: int, batch_size: int, seeds: np.ndarray, device: torch.device):
        self.n, self.device = n, device
        self.full = batch_size >= n
        self.batch = min(batch_size, n)
        self.per_epoch = n // self.batch
        self.gens = [
            torch.Generator().manual_seed(derive_seed(s, 1))
            for s in seeds
        ]
        self.pos = self.per_epoch  # forces a shuffle on the first call
        self.perm: Tensor | None = None
        self.all = torch.arange(n, device=device)

    def next(self) -> tuple[Tensor, bool]:
        if self.full:
            return self.all, False
        if self.pos >= self.per_epoch:
            self.perm = torch.stack([torch.randperm(self.n, generator=g) for g in self.gens])
            self.perm = self.perm.to(self.device)
            self.pos = 0
        assert self.perm is not None
        start = self.pos * self.batch
        self.pos += 1
        return self.perm[:, start : start + self.batch], True


@dataclass
class BatchedOptimizer:
    """SGD-with-momentum or Adam over a ``(B, P)`` stack; each row has its own state."""

    kind: str
    momentum: float
    betas: tuple[float, float]
    eps: float
    buf: Tensor  # SGD momentum buffer / Adam first moment
    sq: Tensor | None  # Adam second moment
    t: int = 0

    @classmethod
    def create(cls, kind: str, thetas: Tensor, momentum: float, betas: tuple[float, float],
               eps: float) -> BatchedOptimizer:
        sq = torch.zeros_like(thetas) if kind == "adam" else None
        return cls(kind, momentum, betas, eps, torch.zeros_like(thetas), sq)

    def step(self, thetas: Tensor, grad: Tensor, lr: float | Tensor) -> Tensor:
        """New parameters ``(B, P)`` after one step with gradients ``grad`` ``(B, P)``;
        ``lr`` is one step size or one per row, ``(B, 1)``.

        Every operation is row-wise, so one row's NaN never reaches another row."""
        self.t += 1
        if self.kind == "sgd":
            # torch.optim.SGD: buf = momentum * buf + g (buf = g at the first step).
            self.buf.mul_(self.momentum).add_(grad)
            if isinstance(lr, Tensor):
                return thetas.addcmul(self.buf, lr, value=-1.0)
            return thetas.add(self.buf, alpha=-lr)
        b1, b2 = self.betas
        assert self.sq is not None
        self.buf.mul_(b1).add_(grad, alpha=1 - b1)
        self.sq.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        # torch.optim.Adam: denom = sqrt(v) / sqrt(1 - b2^t) + eps; step = lr / (1 - b1^t).
        denom = (self.sq.sqrt() / math.sqrt(1 - b2**self.t)).add_(self.eps)
        if isinstance(lr, Tensor):
            return thetas.addcdiv(self.buf * lr, denom, value=-1 / (1 - b1**self.t))
        return thetas.addcdiv(self.buf, denom, value=-lr / (1 - b1**self.t))
