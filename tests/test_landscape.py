"""Tests for lossbarcode.landscape: batched evaluation equals per-model evaluation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from lossbarcode import data, models
from lossbarcode.landscape import Landscape
from lossbarcode.seeds import network_seeds


@pytest.fixture(scope="module")
def modadd():
    return data.load("modadd", n_train=48, n_test=24)


ARCHS = [("fcn", "digits"), ("cnn", "digits"), ("resnet", "digits"), ("transformer", "modadd")]


@pytest.mark.parametrize(("arch", "dataset"), ARCHS)
def test_batched_equals_per_model(arch, dataset, request, reference):
    ds = request.getfixturevalue(dataset)
    model = models.build(arch, 8, 2, ds.input_shape, ds.n_outputs, seed=0)
    land = Landscape.from_dataset(model, ds, device="cpu")
    thetas = land.init(3, seed=1)
    idx = torch.arange(0, 40)
    losses, grads = land.loss_and_grad(thetas, idx)
    full = land.loss(thetas)
    test_loss, test_err = land.test_metrics(thetas)
    for b in range(3):
        ref_l, ref_g = reference(land, thetas[b], land.x_train[idx], land.y_train[idx])
        torch.testing.assert_close(losses[b], ref_l, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grads[b], ref_g, rtol=1e-4, atol=1e-6)
        net = land.unflatten(thetas[b])
        with torch.no_grad():
            torch.testing.assert_close(full[b], land.loss_fn(net(land.x_train), land.y_train),
                                       rtol=1e-5, atol=1e-6)
            out = net(land.x_test)
            torch.testing.assert_close(test_loss[b], land.loss_fn(out, land.y_test),
                                       rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(test_err[b], land.error_fn(out, land.y_test))


def test_per_network_batches_and_explicit_xy(digits):
    model = models.build("fcn", 8, 1, digits.input_shape, digits.n_outputs, seed=0)
    land = Landscape.from_dataset(model, digits, device="cpu")
    thetas = land.init(2, seed=0)
    idx = torch.tensor([[0, 1, 2, 3], [10, 11, 12, 13]])
    per = land.loss(thetas, idx)
    for b in range(2):
        shared = land.loss(thetas[b : b + 1], idx[b])
        explicit = land.loss(thetas[b], (digits.x_train[idx[b]], digits.y_train[idx[b]]))
        torch.testing.assert_close(per[b : b + 1], shared)
        torch.testing.assert_close(per[b : b + 1], explicit)


def test_wide_forward_matches_vmap(digits):
    model = models.build("fcn", 8, 2, digits.input_shape, digits.n_outputs, seed=0)
    land = Landscape.from_dataset(model, digits, device="cpu")
    assert land.wide is not None and land.wide.task == "classification"
    plain = dataclasses.replace(land, wide=None)
    thetas = land.init(3, seed=2)
    for batch in (None, torch.arange(20), torch.randint(0, 96, (3, 16))):
        l1, g1 = land.loss_and_grad(thetas, batch)
        l2, g2 = plain.loss_and_grad(thetas, batch)
        torch.testing.assert_close(l1, l2)
        torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-6)


def test_user_module_loss_and_data(reference):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 3, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
    net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1))

    def loss_fn(out, target):
        return (out - target).abs().mean()

    land = Landscape.from_tensors(net, x[:40], y[:40], x[40:], y[40:], loss_fn=loss_fn,
                                  device="cpu")
    assert land.n_params == 3 * 5 + 5 + 5 + 1
    assert land.batched_loss_fn is None and land.wide is None
    thetas = land.init(2, seed=3)
    losses, grads = land.loss_and_grad(thetas)
    for b in range(2):
        ref_l, ref_g = reference(land, thetas[b], land.x_train, land.y_train)
        torch.testing.assert_close(losses[b], ref_l)
        torch.testing.assert_close(grads[b], ref_g)
    test_loss, test_err = land.test_metrics(thetas)
    assert test_loss.shape == (2,) and test_err is None


def test_init_is_seeded_and_independent_of_k(digits):
    model = models.build("fcn", 8, 1, digits.input_shape, digits.n_outputs, seed=0)
    land = Landscape.from_dataset(model, digits, device="cpu")
    a, b = land.init(3, seed=5), land.init(3, seed=5)
    assert torch.equal(a, b)
    assert torch.equal(land.init(5, seed=5)[:3], a)
    assert not torch.equal(a[0], a[1])
    assert not torch.equal(land.init(3, seed=6), a)
    # Built-in models are re-initialised exactly as models.build(seed=...) would.
    s = int(network_seeds(5, 1)[0])
    ref = models.build("fcn", 8, 1, digits.input_shape, digits.n_outputs, seed=s)
    torch.testing.assert_close(a[0], land.flatten(ref))


def test_init_of_user_module_resets_bare_parameters():
    class WithBare(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)
            self.scale = nn.Parameter(torch.randn(4))

        def forward(self, x):
            return self.lin(x) * self.scale[:2]

    land = Landscape.from_tensors(WithBare(), torch.randn(8, 2), torch.randn(8, 2),
                                  loss_fn=nn.functional.mse_loss, device="cpu")
    thetas = land.init(2, seed=0)
    assert not torch.equal(thetas[0], thetas[1])
    assert torch.isfinite(thetas).all()


def test_flatten_unflatten_roundtrip(digits):
    model = models.build("cnn", 4, 1, digits.input_shape, digits.n_outputs, seed=0)
    land = Landscape.from_dataset(model, digits, device="cpu")
    theta = land.init(1, seed=0)[0]
    net = land.unflatten(theta)
    torch.testing.assert_close(land.flatten(net), theta)
    with pytest.raises(ValueError, match="same architecture"):
        land.flatten(nn.Linear(2, 2))


def test_memory_chunking_gives_same_results(digits):
    model = models.build("fcn", 8, 1, digits.input_shape, digits.n_outputs, seed=0)
    big = Landscape.from_dataset(model, digits, device="cpu")
    # Room for about 10 examples of one network: forces chunking over examples.
    limit = int(big._cost(1, 10, grad=True))
    small = Landscape.from_dataset(model, digits, device="cpu", memory_limit=limit)
    assert small._plan(4, 96, grad=True)[1] < 96
    thetas = big.init(4, seed=0)
    l1, g1 = big.loss_and_grad(thetas)
    l2, g2 = small.loss_and_grad(thetas)
    torch.testing.assert_close(l1, l2, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(big.test_metrics(thetas)[0], small.test_metrics(thetas)[0])


def test_impossible_memory_request_raises_before_allocating(digits):
    model = models.build("fcn", 8, 1, digits.input_shape, digits.n_outputs, seed=0)
    with pytest.raises(ValueError, match="memory_limit"):
        Landscape.from_dataset(model, digits, device="cpu", memory_limit=1000)
    with pytest.raises(ValueError, match="memory_limit"):
        Landscape.from_dataset(model, digits, device="cpu", memory_limit=0)


def test_eval_subset(digits):
    model = models.build("fcn", 8, 1, digits.input_shape, digits.n_outputs, seed=0)
    land = Landscape.from_dataset(model, digits, device="cpu", eval_subset=30)
    assert land.n_eval == 30 and land.n_train == 96
    thetas = land.init(2, seed=0)
    torch.testing.assert_close(land.loss(thetas), land.loss(thetas, land.eval_index))
    with pytest.raises(ValueError, match="eval_subset"):
        Landscape.from_dataset(model, digits, device="cpu", eval_subset=0)


def test_bad_input(digits):
    model = models.build("fcn", 8, 1, digits.input_shape, digits.n_outputs, seed=0)
    land = Landscape.from_dataset(model, digits, device="cpu")
    thetas = land.init(2, seed=0)
    with pytest.raises(ValueError, match="shape"):
        land.loss(thetas[:, :-1])
    with pytest.raises(ValueError, match="lie in"):
        land.loss(thetas, torch.tensor([0, 96]))
    with pytest.raises(ValueError, match="integer"):
        land.loss(thetas, torch.tensor([0.5]))
    with pytest.raises(ValueError, match="shape"):
        land.loss(thetas, torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="k must"):
        land.init(0)
    with pytest.raises(ValueError, match="nn.Module"):
        Landscape.from_dataset("not a model", digits)
    with pytest.raises(ValueError, match="x_train"):
        Landscape.from_dataset(model, object())
    with pytest.raises(ValueError, match="same non-zero"):
        Landscape.from_tensors(model, torch.zeros(3, 64), torch.zeros(2, dtype=torch.long),
                               loss_fn=nn.functional.cross_entropy)
    no_test = Landscape.from_tensors(model, digits.x_train, digits.y_train,
                                     loss_fn=nn.functional.cross_entropy, device="cpu")
    with pytest.raises(ValueError, match="no test set"):
        no_test.test_metrics(thetas)


def test_device_and_dtype(digits):
    model = models.build("fcn", 8, 1, digits.input_shape, digits.n_outputs, seed=0)
    land = Landscape.from_dataset(model, digits, device="cpu", dtype=torch.float64)
    assert land.device == torch.device("cpu") and land.dtype == torch.float64
    out = land.loss(land.init(2, seed=0).numpy())  # numpy input is accepted too
    assert out.dtype == torch.float64 and out.device.type == "cpu"
    assert np.all(np.isfinite(out.numpy()))


def test_moved_helpers_are_reexported_unchanged():
    from lossbarcode import devices, landscape, seeds

    # Kept for compatibility: the old names are the new homes' objects, not copies.
    assert landscape.derive_seed is seeds.derive_seed
    assert landscape.network_seeds is seeds.network_seeds
    assert landscape.default_device is devices.default_device
    assert landscape.available_memory is devices.available_memory
    # Seeds are the stored runs' seeds: fixed values, whatever module computes them.
    assert seeds.derive_seed(0, 1) == int(np.random.SeedSequence([0, 1]).generate_state(1)[0])
    np.testing.assert_array_equal(seeds.network_seeds(3, 2),
                                  [seeds.derive_seed(3, 0) >> 1, seeds.derive_seed(3, 1) >> 1])
    assert devices.mib(3 * 2**20) == "3.0 MiB"


def test_landscape_is_frozen_and_complete_after_construction(digits):
    model = models.build("fcn", 8, 1, digits.input_shape, digits.n_outputs, seed=0)
    land = Landscape.from_dataset(model, digits, device="cpu")
    # Construction measures the activations and picks the wide net without mutating.
    assert land.act_bytes > 0 and land.wide is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        land.act_bytes = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("loss_fn, says", [
    (lambda out, y: (out - y) ** 2, r"shape \(4, 1\): reduce it"),
    (lambda out, y: None, "got NoneType"),
    (lambda out, y: "low", "got str"),
    (lambda out, y: ((out - y) ** 2).mean().to(torch.complex64), "dtype torch.complex64"),
    (lambda out, y: ((out - y) ** 2).mean() * float("nan"), "got nan"),
    (lambda out, y: ((out - y) ** 2).mean() + float("inf"), "got inf"),
    (lambda out, y: (out > y).sum(), "dtype torch.int64"),
    (lambda out, y: 1 / 0, "failed on a probe batch of 4 .*ZeroDivisionError"),
])
def test_from_tensors_checks_what_loss_fn_returns(loss_fn, says):
    """A loss_fn that does not give a real, finite scalar tensor on a probe batch is refused
    with a ValueError naming loss_fn, before any network is trained."""
    x = torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
    y = x.sum(dim=1, keepdim=True)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    with pytest.raises(ValueError, match=f"loss_fn.*{says}"):
        Landscape.from_tensors(net, x, y, loss_fn=loss_fn, device="cpu")
    land = Landscape.from_tensors(net, x, y, loss_fn=lambda out, t: ((out - t) ** 2).mean(),
                                  device="cpu")  # a good one passes the same check
    assert land.n_train == 10
