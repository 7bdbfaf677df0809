"""The smallest Hessian eigenvalue of K networks at once: batched Lanczos on Hessian-vector
products.

A point with a small gradient is a minimum only if the Hessian has no clearly negative
eigenvalue there (else it is a saddle or a maximum). :func:`smallest_eigenpairs` runs Lanczos
with full reorthogonalisation for every row of a ``(K, P)`` stack together: each iteration is
one batched :meth:`~lossbarcode.landscape.Landscape.hvp` call for all K rows, the Krylov basis
is a ``(m, K, P)`` tensor, and each row's tridiagonal matrix is diagonalised at the end.

The smallest Ritz value is an upper bound on the smallest eigenvalue (Cauchy interlacing): after
a few dozen iterations it is accurate for an isolated negative eigenvalue and can miss a tiny
negative one hidden in a dense bulk near zero. A negative Ritz value is always a real direction
of negative curvature (its Ritz vector ``v`` has ``v^T H v`` equal to it).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lossbarcode.choices import LANCZOS_ITERS
from lossbarcode.landscape import Landscape


def smallest_eigenpairs(landscape: Landscape, thetas: Tensor, iters: int = LANCZOS_ITERS,
                        seed: int = 0) -> tuple[Tensor, Tensor]:
    """Smallest Hessian eigenvalue (Ritz value) and its unit vector for each row of ``thetas``.

    Args:
        landscape: the loss (its evaluation-set loss, as :meth:`Landscape.loss`).
        thetas: ``(K, P)`` points (a ``(P,)`` vector is ``K = 1``).
        iters: Lanczos iterations, i.e. Hessian-vector products per row (capped at ``P``, where
            Lanczos is exact).
        seed: seeds the random start vectors (drawn on the CPU, so a seed gives the same start
            on every device).

    Returns:
        ``values`` ``(K,)`` float64 and ``vectors`` ``(K, P)`` unit vectors in the landscape's
        dtype, on its device. Rows whose point or Hessian-vector products are not finite get
        NaN values and zero vectors; the other rows are unaffected.
    """
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters must be an integer >= 1, got {iters!r}")
    thetas = landscape.as_thetas(thetas)
    k, p = thetas.shape
    dev, dt = thetas.device, thetas.dtype
    m = min(iters, p)
    gen = torch.Generator().manual_seed(int(seed))
    ok = torch.isfinite(thetas).all(dim=1)
    # Non-finite rows are evaluated at zero (then reported as NaN) so they cannot poison the
    # batched products of the others.
    thetas = torch.where(ok[:, None], thetas, torch.zeros_like(thetas))
    basis = torch.zeros(m, k, p, dtype=dt, device=dev)
    alpha = torch.zeros(m, k, dtype=torch.float64, device=dev)
    beta = torch.zeros(max(m - 1, 0), k, dtype=torch.float64, device=dev)
    q = _unit(torch.randn(k, p, generator=gen, dtype=torch.float64).to(dev, dt))
    # Below this norm a new Lanczos vector is rounding noise: the Krylov space is invariant,
    # so the row restarts from a fresh random vector orthogonal to its basis (beta = 0 keeps
    # the tridiagonal matrix block-diagonal and its Ritz values valid).
    floor = 100 * torch.finfo(dt).eps
    scale = torch.zeros(k, dtype=torch.float64, device=dev)
    for j in range(m):
        basis[j] = q
        w = landscape.hvp(thetas, q)
        finite = torch.isfinite(w).all(dim=1)
        ok &= finite
        w = torch.where(finite[:, None], w, torch.zeros_like(w))
        a = (w * q).sum(dim=1)
        alpha[j] = a.to(torch.float64)
        scale = torch.maximum(scale, a.abs().to(torch.float64))
        if j == m - 1:
            break
        w = w - a[:, None] * q
        if j > 0:
            w = w - beta[j - 1].to(dt)[:, None] * basis[j - 1]
        w = _orthogonalise(w, basis[: j + 1])
        b = w.to(torch.float64).norm(dim=1)
        small = b <= floor * torch.clamp(scale, min=1.0)
        q = w / torch.clamp(b, min=1e-300).to(dt)[:, None]
        if bool(small.any()):  # rare (P small, or an exactly invariant subspace)
            fresh = _unit(_orthogonalise(
                torch.randn(k, p, generator=gen, dtype=torch.float64).to(dev, dt),
                basis[: j + 1]))
            q = torch.where(small[:, None], fresh, q)
        beta[j] = torch.where(small, torch.zeros_like(b), b)
    tri = torch.diag_embed(alpha.T)
    if m > 1:
        off = torch.diag_embed(beta.T, offset=1)
        tri = tri + off + off.transpose(1, 2)
    # eigh of one batch of (K, m, m) matrices; non-finite rows were zeroed above, so it cannot
    # fail on one row's NaN.
    evals, evecs = torch.linalg.eigh(tri)
    values = evals[:, 0]
    vectors = _unit(torch.einsum("jk,jkp->kp", evecs[:, :, 0].T.to(dt), basis))
    values = torch.where(ok, values, torch.full_like(values, float("nan")))
    vectors = torch.where(ok[:, None], vectors, torch.zeros_like(vectors))
    return values, vectors


def _orthogonalise(w: Tensor, basis: Tensor) -> Tensor:
    """``w`` ``(K, P)`` minus its projection on each row's basis ``(j, K, P)`` (orthonormal),
    twice: one classical Gram-Schmidt pass loses orthogonality in float32, two do not."""
    for _ in range(2):
        coef = torch.einsum("jkp,kp->jk", basis, w)
        w = w - torch.einsum("jk,jkp->kp", coef, basis)
    return w


def _unit(v: Tensor) -> Tensor:
    """Rows of ``v`` ``(K, P)`` scaled to unit norm (zero rows stay zero)."""
    return v / torch.clamp(v.norm(dim=1, keepdim=True), min=torch.finfo(v.dtype).tiny)


def lanczos_bytes(landscape: Landscape, k: int, iters: int = LANCZOS_ITERS) -> int:
    """Bytes of the Lanczos basis for ``k`` rows: ``min(iters, P) * k * P`` elements (the
    Hessian-vector products themselves are chunked by the landscape's memory plan)."""
    es = torch.finfo(landscape.dtype).bits // 8
    return int(min(iters, landscape.n_params) * k * landscape.n_params * es)
