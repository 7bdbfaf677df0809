"""``lossbarcode bench minima``: are the minima minima? The new default training against the
old one, and the full-batch method against the alternatives.

Two tables:

1. **training**: per case (model family and size), the new default (``choices.TRAINING``: the
   family's minibatch phase, then full-batch L-BFGS to ``MINIMA_TOL``, Lanczos, saddle escape)
   against the old default (2000 SGD steps, lr 0.05, batch 64, no full-batch phase), both
   certified by the same rule (:func:`lossbarcode.minima.certify`): steps, seconds, the
   largest full-batch gradient norm, the smallest Hessian eigenvalue, certified / K.
2. **full-batch method**: from the same minibatch-phase result, the batched L-BFGS of
   :func:`lossbarcode.minima.lbfgs` against backtracking full-batch gradient descent (the old
   ``polish``, kept here for the comparison) and ``torch.optim.LBFGS(line_search_fn=
   "strong_wolfe")`` looped over the networks, to the same tolerance and iteration cap:
   iterations (the most any network took), loss-and-gradient evaluations (K rows each for the
   batched methods), seconds and the largest gradient norm at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from lossbarcode import choices, data, models
from lossbarcode.curvature import smallest_eigenpairs
from lossbarcode.landscape import Landscape
from lossbarcode.minima import (
    certify,
    find_minima,
    landscape_arch,
    lbfgs,
    stuck_mask,
    train_minibatch,
)
from lossbarcode.seeds import network_seeds

OLD = ("sgd", 0.05, 2000)  # the training before certificates: no full-batch phase


@dataclass(frozen=True)
class Case:
    """One model to train: family, width, depth, data set (the transformer: heads 4)."""

    arch: str
    width: int
    depth: int
    dataset: str = "digits"

    @property
    def name(self) -> str:
        return f"{self.arch} {self.width}x{self.depth} {self.dataset}"


CASES = (Case("fcn", 4, 2), Case("fcn", 8, 3), Case("fcn", 32, 2), Case("cnn", 8, 2),
         Case("transformer", 32, 2, "modadd"))
METHOD_CASES = (Case("fcn", 8, 3), Case("cnn", 8, 2))


def landscape_for(case: Case, seed: int = 0) -> Landscape:
    """The landscape a run of ``case`` trains on (as ``experiment._load_data`` builds it)."""
    ds = data.load(case.dataset, seed=seed)
    model = models.build(case.arch, case.width, case.depth, ds.input_shape, ds.n_outputs,
                         heads=choices.HEADS, seed=seed)
    return Landscape.from_dataset(model, ds, device="cpu")


def training_benchmark(cases: tuple[Case, ...] = CASES, k: int = 6, seed: int = 0,
                       progress: Callable[[str], object] | None = None) -> list[dict]:
    """Rows of table 1 (see the module docstring), two per case: "new" and "old"."""
    rows = []
    for case in cases:
        land = landscape_for(case, seed)
        start = time.perf_counter()
        mins = find_minima(land, k, seed=seed)
        rows.append(_row(case, "new", f"{mins.optimizer} {mins.lr:g} x{mins.steps}",
                         mins.steps + int(mins.polish_steps_used.max()),
                         time.perf_counter() - start, mins.grad_norm, mins.hessian_min_eig,
                         mins.certified))
        if progress:
            progress(f"{case.name}: new done")
        rows.append(_old_training(case, land, k, seed))
        if progress:
            progress(f"{case.name}: old done")
    return rows


def _old_training(case: Case, land: Landscape, k: int, seed: int) -> dict:
    """The old default: the minibatch phase only, then the same measurements and rule."""
    optimizer, lr, steps = OLD
    seeds = network_seeds(seed, k)
    start = time.perf_counter()
    init = land.init_from_seeds(seeds)
    thetas, active, _, _ = train_minibatch(land, init, seeds, optimizer, lr, "constant",
                                            steps, choices.BATCH_SIZE, 0.9, (0.9, 0.999),
                                            1e-8, 0.0, steps, None)
    loss, grad = land.loss_and_grad(thetas)
    eig, _ = smallest_eigenpairs(land, thetas)
    seconds = time.perf_counter() - start
    initial = land.loss(init).double().numpy()
    final = loss.double().numpy()
    diverged = ~active.numpy() | ~np.isfinite(final) | (final > initial)
    stuck = stuck_mask(final, initial, diverged)
    gnorm = grad.double().norm(dim=1).numpy()
    certified, _ = certify(gnorm, eig.numpy(), stuck, diverged, choices.MINIMA_TOL)
    return _row(case, "old", f"{optimizer} {lr:g} x{steps}", steps, seconds, gnorm,
                eig.numpy(), certified)


def _row(case: Case, which: str, training: str, steps: int, seconds: float,
         grad_norm: np.ndarray, eig: np.ndarray, certified: np.ndarray) -> dict:
    return {"case": case.name, "training": which, "settings": training, "steps": steps,
            "seconds": seconds, "max_grad_norm": float(np.nanmax(grad_norm)),
            "min_eig": float(np.nanmin(eig)) if np.isfinite(eig).any() else float("nan"),
            "certified": f"{int(certified.sum())}/{certified.size}"}


# ----------------------------------------------------------------------------- methods


def method_benchmark(cases: tuple[Case, ...] = METHOD_CASES, k: int = 6, seed: int = 0,
                     tol: float = choices.MINIMA_TOL, cap: int = 500,
                     progress: Callable[[str], object] | None = None) -> list[dict]:
    """Rows of table 2 (see the module docstring): one per case and method, from the same
    minibatch-phase result (the family's default minibatch phase)."""
    rows = []
    for case in cases:
        land = landscape_for(case, seed)
        optimizer, lr, steps, _ = choices.training(landscape_arch(land))
        seeds = network_seeds(seed, k)
        start, _, _, _ = train_minibatch(land, land.init_from_seeds(seeds), seeds, optimizer,
                                          lr, "constant", steps, choices.BATCH_SIZE, 0.9,
                                          (0.9, 0.999), 1e-8, 0.0, steps, None)
        for name, method in (("batched L-BFGS", _ours), ("backtracking GD", _gradient_descent),
                             ("torch LBFGS per network", _torch_lbfgs)):
            t0 = time.perf_counter()
            iters, evals, gnorm = method(land, start.clone(), tol, cap)
            rows.append({"case": case.name, "method": name, "iterations": iters,
                         "evaluations": evals, "seconds": time.perf_counter() - t0,
                         "max_grad_norm": float(gnorm.max()),
                         "converged": f"{int((gnorm <= tol).sum())}/{k}"})
            if progress:
                progress(f"{case.name}: {name} done")
    return rows


def _ours(land: Landscape, thetas: Tensor, tol: float, cap: int) -> tuple[int, int, np.ndarray]:
    out = lbfgs(land, thetas, tol, cap)
    return int(out.steps.max()), out.evaluations, out.grad_norm.numpy()


def _gradient_descent(land: Landscape, thetas: Tensor, tol: float,
                      cap: int) -> tuple[int, int, np.ndarray]:
    """The old ``minima.polish``: full-batch gradient steps, per network a step size that
    grows x1.2 after a step that lowered the loss and halves (the step undone) after one that
    did not; stopping added at ``tol``. Starts at the old final learning rate, 0.05."""
    k = thetas.shape[0]
    rate = torch.full((k, 1), OLD[1], dtype=thetas.dtype)
    loss, grad = land.loss_and_grad(thetas)
    evals, iters = 1, 0
    run = grad.double().norm(dim=1) > tol
    while iters < cap and bool(run.any()):
        trial = thetas - rate * grad
        new_loss, new_grad = land.loss_and_grad(trial)
        evals += 1
        iters += 1
        better = run & torch.isfinite(new_loss) & (new_loss <= loss)
        thetas = torch.where(better[:, None], trial, thetas)
        loss = torch.where(better, new_loss, loss)
        grad = torch.where(better[:, None], new_grad, grad)
        rate = torch.where(better[:, None], rate * 1.2,
                           torch.where(run[:, None], rate * 0.5, rate))
        run = grad.double().norm(dim=1) > tol
    return iters, evals, grad.double().norm(dim=1).numpy()


def _torch_lbfgs(land: Landscape, thetas: Tensor, tol: float,
                 cap: int) -> tuple[int, int, np.ndarray]:
    """``torch.optim.LBFGS`` with a strong-Wolfe line search, one network at a time."""
    evals, most, norms = 0, 0, []
    for row in thetas:
        p = row.clone().requires_grad_(True)
        opt = torch.optim.LBFGS([p], lr=1, max_iter=1, history_size=choices.LBFGS_MEMORY,
                                line_search_fn="strong_wolfe", tolerance_grad=0.0,
                                tolerance_change=0.0)
        count = [0]

        def closure(p=p, count=count):
            loss, grad = land.loss_and_grad(p.detach()[None])
            count[0] += 1
            p.grad = grad[0].clone()
            return loss[0]

        iters = 0
        gnorm = land.grad(p.detach()[None])[0].double().norm()
        while iters < cap and gnorm > tol:
            opt.step(closure)
            iters += 1
            gnorm = land.grad(p.detach()[None])[0].double().norm()
        evals += count[0]
        most = max(most, iters)
        norms.append(float(gnorm))
    return most, evals, np.array(norms)
