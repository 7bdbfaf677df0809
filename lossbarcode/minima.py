"""K minima of one loss landscape, trained together as one batched program.

:func:`find_minima` stacks the K parameter vectors into a ``(K, P)`` tensor and trains them all at
once: one vmapped forward/backward (:meth:`Landscape.evaluate_batch`) gives all K gradients, and
SGD-with-momentum or Adam run as batched tensor updates with per-network optimizer state (the
same update rules as ``torch.optim.SGD`` / ``torch.optim.Adam``).

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
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lossbarcode._checks import check_int as _check_int
from lossbarcode._checks import check_nonnegative, check_positive
from lossbarcode.choices import (
    BATCH_SIZE,
    MINIMA_LR,
    MINIMA_STEPS,
    OPTIMIZER,
    OPTIMIZERS,
    POLISH_STEPS,
    SCHEDULE,
    SCHEDULES,
)
from lossbarcode.landscape import Landscape
from lossbarcode.seeds import derive_seed, network_seeds

DEFAULT_LR = MINIMA_LR  # kept for compatibility: the training rates, choices.MINIMA_LR
Progress = Callable[[int, int, float], Any]


@dataclass(frozen=True, eq=False)
class Minima:
    """K trained networks (local minima) and how they were made.

    Attributes:
        thetas: ``(K, P)`` float tensor on the CPU, the final parameters.
        train_loss: ``(K,)`` mean loss on the landscape's evaluation set (the full training set
            unless the landscape has an ``eval_subset``); NaN where diverged.
        test_loss: ``(K,)``; NaN where diverged or without a test set.
        test_error: ``(K,)`` fraction wrong; NaN for regression, diverged runs, no test set.
        diverged: ``(K,)`` bool, True for runs that hit NaN/inf (exclude them downstream).
        seeds: ``(K,)`` int64, each network's initialisation/shuffling seed.
        history_steps: ``(R,)`` steps at which minibatch losses were recorded.
        history_loss: ``(R, K)`` minibatch training loss of each network at those steps.
        grad_norm: ``(K,)`` norm of each network's full gradient of the evaluation-set loss
            at its final parameters (how close to a critical point it is; NaN where diverged
            or unknown).
        optimizer, lr, schedule, steps, batch_size, momentum, weight_decay, seed,
        polish_steps: the settings.
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

    def config(self) -> dict[str, Any]:
        """The training settings as a JSON-safe dict."""
        return {
            "k": self.k, "optimizer": self.optimizer, "lr": self.lr, "schedule": self.schedule,
            "steps": self.steps, "batch_size": self.batch_size, "momentum": self.momentum,
            "weight_decay": self.weight_decay, "seed": self.seed,
            "polish_steps": self.polish_steps,
        }

    def to_arrays(self) -> dict[str, np.ndarray]:
        """All fields as numpy arrays (for ``np.savez``; settings as 0-d arrays)."""
        out = {
            "thetas": self.thetas.detach().cpu().numpy(),
            "train_loss": self.train_loss, "test_loss": self.test_loss,
            "test_error": self.test_error, "diverged": self.diverged, "seeds": self.seeds,
            "history_steps": self.history_steps, "history_loss": self.history_loss,
            "grad_norm": self.grad_norm,
        }
        out.update({key: np.asarray(v) for key, v in self.config().items() if key != "k"})
        return out

    @classmethod
    def from_arrays(cls, arrays: Any) -> Minima:
        """Inverse of :meth:`to_arrays` (accepts a dict or an ``np.load`` result)."""
        try:
            a = {key: np.asarray(arrays[key]) for key in _ARRAY_FIELDS}
        except KeyError as exc:
            raise ValueError(f"minima arrays lack field {exc}; were they written by "
                             "Minima.to_arrays?") from exc
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
            seed=int(a["seed"]),
            # Minima stored before gradient norms were recorded: unknown, not zero.
            grad_norm=np.asarray(arrays["grad_norm"], dtype=np.float64) if "grad_norm" in
            arrays else np.full(a["thetas"].shape[0], np.nan),
            polish_steps=int(arrays["polish_steps"]) if "polish_steps" in arrays else 0,
        )


def _check_arrays(a: dict[str, np.ndarray]) -> None:
    """``ValueError`` unless stored minima arrays fit together: (K, P) finite float thetas,
    (K,) per-minimum columns, (R, K) history, numeric 0-d settings."""
    thetas = a["thetas"]
    if thetas.ndim != 2 or thetas.shape[0] < 1 or thetas.shape[1] < 1 or not np.issubdtype(
            thetas.dtype, np.floating):
        raise ValueError(f"thetas must be a (K, P) float array, got {thetas.dtype} "
                         f"{thetas.shape}")
    k = thetas.shape[0]
    if not np.all(np.isfinite(thetas)):
        raise ValueError("thetas hold NaN or infinite parameters")
    for name in ("train_loss", "test_loss", "test_error", "diverged", "seeds"):
        if a[name].shape != (k,):
            raise ValueError(f"{name} must have shape ({k},), got {a[name].shape}")
    steps = a["history_steps"]
    if steps.ndim != 1 or a["history_loss"].shape not in ((steps.shape[0], k), (0,)):
        raise ValueError(f"history_loss must have shape ({steps.shape[0]}, {k}), got "
                         f"{a['history_loss'].shape}")
    for name in ("lr", "steps", "batch_size", "momentum", "weight_decay", "seed"):
        if a[name].shape != () or not np.issubdtype(a[name].dtype, np.number):
            raise ValueError(f"{name} must be a number, got {a[name]!r}")


_ARRAY_FIELDS = (
    "thetas", "train_loss", "test_loss", "test_error", "diverged", "seeds", "history_steps",
    "history_loss", "optimizer", "lr", "schedule", "steps", "batch_size", "momentum",
    "weight_decay", "seed",
)


def lr_at(step: int, steps: int, lr: float, schedule: str) -> float:
    """Learning rate at ``step`` (0-based) of ``steps``: constant, or cosine decay from ``lr``
    to 0 over the run ("anneal")."""
    if schedule == "constant":
        return lr
    return 0.5 * lr * (1.0 + math.cos(math.pi * step / max(1, steps)))


def find_minima(
    landscape: Landscape,
    k: int,
    optimizer: str = OPTIMIZER,
    lr: float | None = None,
    schedule: str = SCHEDULE,
    steps: int = MINIMA_STEPS,
    batch_size: int = BATCH_SIZE,
    seed: int = 0,
    momentum: float = 0.9,
    *,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    record_every: int | None = None,
    progress: Progress | None = None,
    polish_steps: int = POLISH_STEPS,
) -> Minima:
    """Train ``k`` networks from ``k`` seeds together; return their final parameters and losses.

    Args:
        landscape: the loss to minimise (:class:`~lossbarcode.landscape.Landscape`).
        k: number of minima, at least 2.
        optimizer: ``"sgd"`` (heavy-ball momentum, as ``torch.optim.SGD``) or ``"adam"``.
        lr: peak learning rate; default 0.05 for SGD, 1e-3 for Adam.
        schedule: ``"constant"`` or ``"anneal"`` (cosine decay to 0 over ``steps``).
        steps: optimizer steps per network.
        batch_size: examples per minibatch (capped at the training-set size; full-batch
            gradient descent when it covers the whole set).
        seed: derives the per-network seeds (see module docstring).
        momentum: SGD momentum (ignored by Adam, which uses ``betas``).
        weight_decay: L2 penalty added to the gradient (as ``torch.optim``), default 0.
        record_every: record minibatch losses every this many steps (default ``steps // 100``).
        progress: called as ``progress(step, steps, mean_loss)`` at every record (``mean_loss``
            over the networks that have not diverged).
        polish_steps: after training, this many full-batch gradient steps on the evaluation
            set with a per-network step size that starts at the final learning rate, grows
            while the loss falls and halves (undoing the step) when it rises: towards true
            critical points (see ``Minima.grad_norm``). 0 (default): none.

    Returns:
        :class:`Minima` with parameters on the CPU and per-network train/test metrics.
    """
    k, steps, batch_size = _check_int(k, "k", 2), _check_int(steps, "steps", 1), _check_int(
        batch_size, "batch_size", 1)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    lr = MINIMA_LR[optimizer] if lr is None else check_positive(lr, "lr")
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
        raise ValueError(f"betas must lie in [0, 1), got {betas}")
    weight_decay = check_nonnegative(weight_decay, "weight_decay")
    seed = _check_int(seed, "seed", 0)
    polish_steps = _check_int(polish_steps, "polish_steps", 0)
    record_every = max(1, steps // 100) if record_every is None else _check_int(
        record_every, "record_every", 1)

    dev = landscape.device
    seeds = network_seeds(seed, k)
    thetas = landscape.init_from_seeds(seeds)
    sampler = _Sampler(landscape.n_train, batch_size, seeds, dev)
    state = BatchedOptimizer.create(optimizer, thetas, momentum, betas, eps)
    active = torch.ones(k, dtype=torch.bool, device=dev)
    initial_loss = landscape.loss(thetas).to("cpu", torch.float64).numpy()
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

    start_lr = max(lr_at(steps - 1, steps, lr, schedule), 1e-3 * lr)
    thetas = polish(landscape, thetas, polish_steps, start_lr, active)
    loss_full, grad_full = landscape.loss_and_grad(thetas)
    train_loss = loss_full.to("cpu", torch.float64).numpy()
    grad_norm = grad_full.to(torch.float64).norm(dim=1).cpu().numpy()
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
        for arr in (train_loss, test_loss, test_error, grad_norm):
            arr[diverged] = np.nan
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
    )


def polish(landscape: Landscape, thetas: Tensor, steps: int, lr: float,
           active: Tensor | None = None) -> Tensor:
    """``steps`` full-batch gradient steps on ``thetas`` ``(K, P)`` (evaluation set), each
    network with its own step size: x1.2 after a step that lowered its loss, x0.5 and the step
    undone after one that raised it (or went non-finite). Rows where ``active`` ``(K,)`` is
    False stay as they are. Returns the new ``(K, P)``."""
    if steps == 0:
        return thetas
    k = thetas.shape[0]
    rate = torch.full((k, 1), float(lr), dtype=thetas.dtype, device=thetas.device)
    keep = torch.ones(k, dtype=torch.bool, device=thetas.device) if active is None else active
    loss, grad = landscape.loss_and_grad(thetas)
    for _ in range(steps):
        trial = thetas - rate * grad
        new_loss, new_grad = landscape.loss_and_grad(trial)
        better = keep & torch.isfinite(new_loss) & (new_loss <= loss)
        thetas = torch.where(better[:, None], trial, thetas)
        loss = torch.where(better, new_loss, loss)
        grad = torch.where(better[:, None], new_grad, grad)
        rate = torch.where(better[:, None], rate * 1.2, rate * 0.5)
    return thetas


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
