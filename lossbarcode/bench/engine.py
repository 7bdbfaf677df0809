"""Benchmark of the batched engine against plain per-network loops.

``python -m lossbarcode bench engine [--device cuda] [--widths 32,128,1024]`` runs, for each
width, the same work two ways in one process and reports the speed-up:

1. ``minima``: K networks (digits, fcn of the given width and depth 2) trained by
   :func:`lossbarcode.minima.find_minima` (one vmapped program) vs one ``nn.Module`` +
   ``torch.optim`` optimizer per seed in a Python loop: same initialisations, minibatch order,
   number of steps and batch size, so the final parameters agree up to float round-off
   (``median_abs_diff``, ``max_abs_diff``: per network, the largest parameter difference). Round-off
   can decide on which side of a ReLU kink an example falls; such a network's two runs then
   part (differences of 1e-3 and more) while the others stay within about 1e-6, hence the median.
2. ``neb``: nudged elastic bands on all pairs of ``neb_k`` minima in one call of
   :func:`lossbarcode.paths.connect` vs one call per pair (each call still evaluates that
   pair's images together, in one batched program).
3. ``neb-image``: the same batched call vs one call per pair on a landscape that evaluates one
   image at a time (``functional_call`` + autograd on the plain module, no vmap, no wide
   net): the cost model of a classic NEB implementation, which holds one network per image.
   Everything else (minibatches, steps, insertions, profiles) is the same code, so both ways
   find the same paths.

Each row also gives loss evaluations per second (one evaluation = one network's loss, with its
gradient while training, on one minibatch or on the full training set for NEB's loss profiles)
and achieved GFLOP/s, estimated as ``6 * params * examples`` per loss+gradient evaluation and
``2 * params * examples`` per forward-only one (an fcn), next to the GFLOP/s of a large
``torch.matmul`` on the same device, the practical ceiling. From these, ``ceiling`` is the
speed-up the batched run would show if it computed at the matmul rate: ``loop time / (FLOPs /
matmul GFLOP/s)``. A target above it cannot be met against that loop on that device, whatever
the batched code does. Times are the best of ``repeats`` alternating runs; CUDA work is
synchronised before every clock read.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any

import numpy as np
import torch

from lossbarcode.landscape import Landscape, default_device, network_seeds

PARTS = ("minima", "neb", "neb-image")


def engine_benchmark(
    device: str | torch.device | None = "cpu",
    widths: Sequence[int] = (32,),
    k: int = 16,
    *,
    depth: int = 2,
    steps: int = 300,
    batch_size: int = 64,
    lr: float = 0.05,
    neb_k: int = 8,
    neb_steps: int = 200,
    neb_images: int = 6,
    neb_batch_size: int = 128,
    seed: int = 0,
    repeats: int = 3,
    parts: Sequence[str] = PARTS,
    progress: Callable[[str], Any] | None = None,
) -> list[dict[str, Any]]:
    """Time batched vs looped minima training and NEB; one row per (width, part).

    Returns a list of dicts with keys ``part, device, width, n_params, batched_s, loop_s,
    speedup, evals_per_s_batched, evals_per_s_loop, gflops_batched, gflops_loop,
    matmul_gflops, speedup_ceiling`` (see the module docstring) and, for ``minima``,
    ``median_abs_diff`` and ``max_abs_diff``: over the networks, of each network's largest
    parameter difference between the two ways. Each time is the best of ``repeats`` runs
    (batched and looped runs alternate), which filters out interference from other processes."""
    from lossbarcode import data, models

    dev = default_device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' requested but CUDA is not available; use device='cpu'")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if k < 2 or neb_k < 2:
        raise ValueError("k and neb_k must be at least 2")
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown benchmark parts {sorted(unknown)}; choose from "
                         f"{', '.join(PARTS)}")
    say = progress or (lambda _msg: None)
    ds = data.load("digits")
    ceiling = matmul_gflops(dev)
    rows: list[dict[str, Any]] = []
    for width in widths:
        model = models.build("fcn", int(width), depth, ds.input_shape, ds.n_outputs, seed=seed)
        land = Landscape.from_dataset(model, ds, device=dev)
        base = {"device": str(dev), "width": int(width), "n_params": land.n_params,
                "matmul_gflops": ceiling}
        if "minima" in parts:
            say(f"width {width}: minima, batched vs loop")
            rows.append({**base, **_bench_minima(land, k, steps, batch_size, lr, seed, repeats)})
        for part, loop_land in (("neb", land), ("neb-image", OneNetworkAtATime.of(land))):
            if part in parts:
                say(f"width {width}: {part}, batched vs loop")
                rows.append({**base, "part": part, **_bench_neb(
                    land, loop_land, neb_k, neb_steps, neb_images, neb_batch_size, lr, seed,
                    repeats)})
        for r in rows:
            if r["width"] == int(width):
                flops = r["gflops_batched"] * r["batched_s"]  # GFLOP of the batched run
                r["speedup_ceiling"] = r["loop_s"] * r["matmul_gflops"] / flops
                say(f"width {width}: {r['part']}: batched {r['batched_s']:.3g} s, loop "
                    f"{r['loop_s']:.3g} s, {r['speedup']:.1f}x")
    return rows


def print_engine_benchmark(rows: Sequence[dict[str, Any]], file: Any = None) -> None:
    """Print the rows of :func:`engine_benchmark` as a table."""
    head = (f"{'part':<9} {'device':<7} {'width':>6} {'params':>9} {'batched s':>10} "
            f"{'loop s':>8} {'speedup':>8} {'evals/s b':>10} {'evals/s l':>10} "
            f"{'GFLOP/s b':>10} {'GFLOP/s l':>10} {'matmul':>8} {'ceiling':>8}")
    print(head, file=file)
    print("-" * len(head), file=file)
    for r in rows:
        print(f"{r['part']:<9} {r['device']:<7} {r['width']:>6} {r['n_params']:>9,} "
              f"{r['batched_s']:>10.3f} {r['loop_s']:>8.3f} {r['speedup']:>7.1f}x "
              f"{r['evals_per_s_batched']:>10,.0f} {r['evals_per_s_loop']:>10,.0f} "
              f"{r['gflops_batched']:>10.2f} {r['gflops_loop']:>10.2f} "
              f"{r['matmul_gflops']:>8.1f} {r['speedup_ceiling']:>7.1f}x", file=file)
    for r in (r for r in rows if "max_abs_diff" in r):
        print(f"minima width {r['width']}: batched vs looped parameters, largest |diff| per "
              f"network: median {r['median_abs_diff']:.1e}, max {r['max_abs_diff']:.1e} (a "
              "network whose runs fall on different sides of a ReLU kink parts from its twin)",
              file=file)
    print("evals: one network's loss (+ gradient) on one minibatch or on the full training set. "
          "GFLOP/s: 6 x params x examples per loss+gradient evaluation, 2 x params x examples "
          "per forward-only one; 'matmul': a large torch.matmul on the same device (the "
          "practical ceiling); 'ceiling': the speed-up at that rate, loop s / (FLOPs / matmul "
          "GFLOP/s).", file=file)


def matmul_gflops(device: torch.device, n: int | None = None, repeats: int = 5) -> float:
    """GFLOP/s of an ``n x n`` float32 ``torch.matmul`` on ``device`` (best of ``repeats``)."""
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b  # warm-up (kernel selection, allocation)
    best = min(_timed(device, lambda: a @ b)[1] for _ in range(repeats))
    return 2 * n**3 / best / 1e9


# ------------------------------------------------------------------------------ parts


def _bench_minima(land: Landscape, k: int, steps: int, batch_size: int, lr: float, seed: int,
                  repeats: int) -> dict[str, Any]:
    """The minibatch training program (the phase batching accelerates; the full-batch phase
    and the certificate are ``bench minima``'s): batched against one network at a time, with
    SGD, both ending with a full evaluation."""
    from lossbarcode.minima import train_minibatch

    dev = land.device
    seeds = network_seeds(seed, k)  # the seeds find_minima gives its k networks
    start = land.init_from_seeds(seeds)

    def batched_run(steps: int = steps) -> torch.Tensor:
        out = train_minibatch(land, start, seeds, "sgd", lr, "constant", steps, batch_size,
                              0.9, (0.9, 0.999), 1e-8, 0.0, max(1, steps // 100), None)[0]
        land.loss(out)
        land.test_metrics(out)
        return out

    # Warm-up both ways (first vmap trace, kernel selection) so only steady state is timed.
    batched_run(3)
    _loop_minima(land, land.init(1, seed), np.zeros(1, dtype=np.int64), 3, batch_size, lr)

    def loop_run() -> torch.Tensor:
        out = _loop_minima(land, start, seeds, steps, batch_size, lr)
        land.loss(out)
        land.test_metrics(out)
        return out

    batched, t_b, looped, t_l = _alternate(dev, batched_run, loop_run, repeats)
    per_net = (batched.cpu() - looped.cpu()).abs().amax(dim=1)
    n_eval = k * steps
    flops = 6.0 * land.n_params * min(batch_size, land.n_train) * n_eval
    return {
        "part": "minima", "batched_s": t_b, "loop_s": t_l, "speedup": t_l / t_b,
        "evals_per_s_batched": n_eval / t_b, "evals_per_s_loop": n_eval / t_l,
        "gflops_batched": flops / t_b / 1e9, "gflops_loop": flops / t_l / 1e9,
        "median_abs_diff": float(per_net.median()), "max_abs_diff": float(per_net.max()),
    }


def _loop_minima(land: Landscape, start: torch.Tensor,
                 seeds: np.ndarray, steps: int, batch_size: int, lr: float) -> torch.Tensor:
    """The reference: one module and one ``torch.optim.SGD`` per network, trained in turn."""
    from lossbarcode.minima import _Sampler

    loss_fn = land.loss_fn
    out = []
    for i, s in enumerate(seeds):
        net = land.unflatten(start[i])
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
        sampler = _Sampler(land.n_train, batch_size, np.array([s]), land.device)
        for _ in range(steps):
            idx, per_vector = sampler.next()
            idx = idx[0] if per_vector else idx
            opt.zero_grad(set_to_none=True)
            x, y = land.gather(idx)
            loss_fn(net(x), y).backward()
            opt.step()
        out.append(land.flatten(net))
    return torch.stack(out)


def _bench_neb(land: Landscape, loop_land: Landscape, k: int, steps: int, images: int,
               batch_size: int, lr: float, seed: int, repeats: int) -> dict[str, Any]:
    from lossbarcode.minima import find_minima
    from lossbarcode.paths import connect

    dev = land.device
    mins = find_minima(land, k, optimizer="sgd", lr=lr, steps=200, seed=seed, polish_steps=1,
                       lanczos_iters=1, saddle_rounds=0)
    kw = {"method": "neb", "steps": steps, "images": images, "batch_size": batch_size,
          "seed": seed, "restarts": 1}
    for lnd in (land, loop_land):  # warm-up
        connect(lnd, mins, [(0, 1)], **{**kw, "steps": 2})
    pairs = [(int(i), int(j)) for n, i in enumerate(mins.valid) for j in mins.valid[n + 1 :]]
    res, t_b, _, t_l = _alternate(dev, lambda: connect(land, mins, "all", **kw),
                                  lambda: [connect(loop_land, mins, [p], **kw) for p in pairs],
                                  repeats)
    # Training evaluations (loss + gradient on a minibatch): interior images per pair grow by
    # `insert` every AutoNEB cycle. Full-set forward evaluations: the dense profiles of the
    # straight and the final chains, and the segment midpoints scored before each insertion.
    st = res.settings
    cycles, insert, e = st["cycles"], st["insert"], st["eval_points"]
    bounds = np.linspace(0, steps, cycles + 1).round().astype(int)
    n_train_evals = len(pairs) * sum((images + c * insert) * (bounds[c + 1] - bounds[c])
                                     for c in range(cycles))
    n_full_evals = sum(len(t) for t in res.profile_t) + len(pairs) * (
        (images + 1) * (e + 1) + 1 + sum(images + 1 + c * insert for c in range(cycles - 1)))
    n_eval = n_train_evals + n_full_evals
    flops = land.n_params * (6.0 * min(batch_size, land.n_train) * n_train_evals
                             + 2.0 * land.n_eval * n_full_evals)
    return {
        "batched_s": t_b, "loop_s": t_l, "speedup": t_l / t_b,
        "evals_per_s_batched": n_eval / t_b, "evals_per_s_loop": n_eval / t_l,
        "gflops_batched": flops / t_b / 1e9, "gflops_loop": flops / t_l / 1e9,
    }


class OneNetworkAtATime(Landscape):
    """A baseline only: the same landscape, evaluating its parameter vectors one at a time
    with ``functional_call`` + autograd on the plain module (no vmap, no wide net)."""

    @classmethod
    def of(cls, land: Landscape) -> OneNetworkAtATime:
        return cls(**{f.name: getattr(land, f.name) for f in fields(land)})

    def evaluate_batch(self, thetas: torch.Tensor, x: torch.Tensor, y: torch.Tensor, *,
                       per_vector: bool = False, grad: bool = True
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
        losses, grads = [], []
        for i in range(thetas.shape[0]):
            xi, yi = (x[i], y[i]) if per_vector else (x, y)
            with torch.enable_grad() if grad else torch.no_grad():
                theta = thetas[i].detach().requires_grad_(grad)
                loss = self.loss_fn(self._forward(self.params(theta), xi), yi)
                if grad:
                    grads.append(torch.autograd.grad(loss, theta)[0])
            losses.append(loss.detach())
        return torch.stack(losses), torch.stack(grads) if grad else None


def _alternate(device: torch.device, first: Callable[[], Any], second: Callable[[], Any],
               repeats: int) -> tuple[Any, float, Any, float]:
    """Run ``first`` and ``second`` alternately ``repeats`` times; results and best times."""
    t1 = t2 = float("inf")
    out1 = out2 = None
    for _ in range(repeats):
        out1, t = _timed(device, first)
        t1 = min(t1, t)
        out2, t = _timed(device, second)
        t2 = min(t2, t)
    return out1, t1, out2, t2


def _timed(device: torch.device, fn: Callable[[], Any]) -> tuple[Any, float]:
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
