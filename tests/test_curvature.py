"""Tests for Landscape.hvp and lossbarcode.curvature: Hessian-vector products and Lanczos."""

from __future__ import annotations

import closed_forms
import numpy as np
import pytest
import torch
from torch.func import functional_call

from lossbarcode import data, models
from lossbarcode.curvature import smallest_eigenpairs
from lossbarcode.landscape import Landscape


def _tiny(arch: str, dtype=torch.float64, **kwargs) -> Landscape:
    if arch == "transformer":
        ds = data.load("modadd", p=5, n_train=12, n_test=4)
        model = models.build("transformer", 4, 1, ds.input_shape, ds.n_outputs, heads=2, seed=0)
    else:
        ds = data.load("digits", n_train=24, n_test=8)
        width, depth = {"fcn": (3, 2), "cnn": (2, 1), "resnet": (2, 1)}[arch]
        model = models.build(arch, width, depth, ds.input_shape, ds.n_outputs, seed=0)
    return Landscape.from_dataset(model, ds, device="cpu", dtype=dtype, **kwargs)


def _dense_hessian(land: Landscape, theta: torch.Tensor) -> torch.Tensor:
    """The Hessian of the per-network loss by torch.autograd.functional.hessian, through the
    plain module (not the landscape's batched loss or wide net): an independent reference."""
    def loss(t):
        out = functional_call(land.module, ({n: v for n, v in land.params(t).items()},
                                            land.fixed), (land.x_eval,))
        return land.loss_fn(out, land.y_eval)

    return torch.autograd.functional.hessian(loss, theta, vectorize=True)


def _camel_land() -> Landscape:
    return closed_forms.landscape(closed_forms.camel, 2)


def _camel_hessian(x: float, y: float) -> np.ndarray:
    return np.array([[4 - 12.6 * x**2 + 5 * x**4, 1.0], [1.0, 2.0]])


@pytest.mark.parametrize("arch", ["fcn", "cnn", "resnet", "transformer"])
def test_hvp_matches_dense_hessian(arch):
    land = _tiny(arch)
    if arch == "fcn":
        assert land.wide is not None  # the wide net's forward is differentiated twice
    thetas = land.init(2, seed=3)
    vectors = torch.randn(2, land.n_params, generator=torch.Generator().manual_seed(0),
                          dtype=torch.float64)
    hv = land.hvp(thetas, vectors)
    assert hv.shape == (2, land.n_params) and hv.dtype == torch.float64
    for i in range(2):
        ref = _dense_hessian(land, thetas[i]) @ vectors[i]
        torch.testing.assert_close(hv[i], ref, rtol=1e-9, atol=1e-11)


def test_hvp_chunked_equals_whole():
    land = _tiny("fcn")
    # A memory limit that forces one vector and a few examples per chunk.
    small = _tiny("fcn", memory_limit=int(land._cost(1, 5, grad=True, factor=3.0)))
    assert small._plan(2, land.n_eval, grad=True, factor=3.0)[1] < land.n_eval
    thetas, vectors = land.init(3, seed=1), land.init(3, seed=2)
    torch.testing.assert_close(small.hvp(thetas, vectors), land.hvp(thetas, vectors))


def test_hvp_user_model_and_bad_shapes():
    land = _camel_land()
    pts = torch.tensor([[0.0, 0.0], [1.747552, -0.873776], [1.070542, -0.535271]],
                       dtype=torch.float64)
    for p in pts:
        h = torch.as_tensor(_camel_hessian(*p.tolist()))
        hv = land.hvp(p.expand(2, 2), torch.eye(2, dtype=torch.float64))
        torch.testing.assert_close(hv, h, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="shape"):
        land.hvp(pts, pts[:2])


def test_lanczos_camel_matches_analytic_hessian():
    land = _camel_land()
    pts = torch.tensor([[0.0, 0.0], [1.747552, -0.873776], [-1.747552, 0.873776],
                        [1.070542, -0.535271], [-1.070542, 0.535271]], dtype=torch.float64)
    values, vectors = smallest_eigenpairs(land, pts)
    for i, p in enumerate(pts.tolist()):
        evals, evecs = np.linalg.eigh(_camel_hessian(*p))
        assert values[i].item() == pytest.approx(evals[0], abs=1e-9)
        assert abs(abs(float(vectors[i].numpy() @ evecs[:, 0])) - 1) < 1e-9
    # Minima have positive curvature; the saddles a clear negative eigenvalue.
    assert (values[:3] > 0.5).all() and (values[3:] < -3).all()


@pytest.mark.parametrize("arch", ["fcn", "transformer"])
def test_lanczos_matches_eigvalsh(arch):
    land = _tiny(arch)
    thetas = land.init(2, seed=5)
    # Enough iterations to span the whole space: Lanczos is then exact.
    values, vectors = smallest_eigenpairs(land, thetas, iters=land.n_params)
    # A few dozen: an upper bound on the smallest eigenvalue (interlacing), close to it.
    few, _ = smallest_eigenpairs(land, thetas, iters=30)
    for i in range(2):
        h = _dense_hessian(land, thetas[i])
        lo = torch.linalg.eigvalsh(h)[0].item()
        assert values[i].item() == pytest.approx(lo, abs=1e-8)
        v = vectors[i]
        assert v.norm().item() == pytest.approx(1.0)
        assert (h @ v - lo * v).norm().item() < 1e-5
        assert few[i].item() >= lo - 1e-10
        assert v @ h @ v == pytest.approx(values[i].item(), abs=1e-8)


def test_lanczos_float32_seeded_and_nan_rows_isolated():
    land = _tiny("fcn", dtype=torch.float32)
    thetas = land.init(3, seed=2)
    a, va = smallest_eigenpairs(land, thetas, iters=20, seed=1)
    b, vb = smallest_eigenpairs(land, thetas, iters=20, seed=1)
    assert torch.equal(a, b) and torch.equal(va, vb) and va.dtype == torch.float32
    h = _dense_hessian(_tiny("fcn"), thetas[0].double())
    assert a[0].item() >= torch.linalg.eigvalsh(h)[0].item() - 1e-3
    bad = thetas.clone()
    bad[1] = float("nan")
    c, vc = smallest_eigenpairs(land, bad, iters=20, seed=1)
    assert torch.isnan(c[1]) and torch.all(vc[1] == 0)
    torch.testing.assert_close(c[[0, 2]], a[[0, 2]])
    with pytest.raises(ValueError, match="iters"):
        smallest_eigenpairs(land, thetas, iters=0)
