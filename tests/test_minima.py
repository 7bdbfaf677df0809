"""Tests for lossbarcode.minima: K networks trained together."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from lossbarcode import data, models
from lossbarcode.landscape import Landscape
from lossbarcode.minima import Minima, find_minima, lr_at


@pytest.fixture(scope="module")
def land():
    ds = data.load("digits", n_train=256, n_test=128)
    model = models.build("fcn", 16, 1, ds.input_shape, ds.n_outputs, seed=0)
    return Landscape.from_dataset(model, ds, device="cpu")


def test_find_minima_trains_all_networks(land):
    calls = []
    mins = find_minima(land, 4, steps=150, batch_size=32, lr=0.05,
                       progress=lambda s, t, loss: calls.append((s, t, loss)))
    assert mins.thetas.shape == (4, land.n_params) and mins.thetas.device.type == "cpu"
    for arr in (mins.train_loss, mins.test_loss, mins.test_error, mins.diverged, mins.seeds):
        assert arr.shape == (4,)
    assert not mins.diverged.any()
    init_loss = land.loss(land.init_from_seeds(mins.seeds)).numpy()
    assert np.all(mins.train_loss < 0.5 * init_loss)
    assert np.all((mins.test_error >= 0) & (mins.test_error <= 1))
    assert len(set(map(tuple, mins.thetas[:, :5].tolist()))) == 4  # distinct networks
    torch.testing.assert_close(torch.as_tensor(mins.train_loss, dtype=torch.float32),
                               land.loss(mins.thetas))
    assert calls and calls[-1][0] == 150 and calls[-1][1] == 150
    assert mins.history_loss.shape == (len(mins.history_steps), 4)


def test_same_seed_identical_results(land):
    a = find_minima(land, 3, steps=40, batch_size=32, seed=7)
    b = find_minima(land, 3, steps=40, batch_size=32, seed=7)
    assert torch.equal(a.thetas, b.thetas)
    np.testing.assert_array_equal(a.train_loss, b.train_loss)
    np.testing.assert_array_equal(a.test_error, b.test_error)
    c = find_minima(land, 3, steps=40, batch_size=32, seed=8)
    assert not torch.equal(a.thetas, c.thetas)


def test_network_does_not_depend_on_k(land):
    a = find_minima(land, 2, steps=30, batch_size=32, seed=1)
    b = find_minima(land, 3, steps=30, batch_size=32, seed=1)
    torch.testing.assert_close(a.thetas, b.thetas[:2])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_batched_optimizer_matches_torch_optim(land, optimizer):
    """One network trained by find_minima equals nn.Module + torch.optim on the same data."""
    from lossbarcode.minima import _Sampler

    steps, bs, lr = 25, 32, 0.05 if optimizer == "sgd" else 0.01
    mins = find_minima(land, 2, optimizer=optimizer, lr=lr, steps=steps, batch_size=bs,
                       seed=3, weight_decay=1e-3)
    for i in range(2):
        net = land.unflatten(land.init_from_seeds(mins.seeds[i : i + 1])[0])
        opt = (torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=1e-3)
               if optimizer == "sgd"
               else torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-3))
        sampler = _Sampler(land.n_train, bs, mins.seeds[i : i + 1], land.device)
        for _ in range(steps):
            idx, _ = sampler.next()
            opt.zero_grad()
            land.loss_fn(net(land.x_train[idx[0]]), land.y_train[idx[0]]).backward()
            opt.step()
        torch.testing.assert_close(mins.thetas[i], land.flatten(net), rtol=1e-4, atol=1e-5)


def test_schedules(land):
    assert lr_at(0, 100, 0.1, "constant") == lr_at(99, 100, 0.1, "constant") == 0.1
    assert lr_at(0, 100, 0.1, "anneal") == pytest.approx(0.1)
    assert lr_at(50, 100, 0.1, "anneal") == pytest.approx(0.05)
    assert lr_at(100, 100, 0.1, "anneal") == pytest.approx(0.0)
    a = find_minima(land, 2, steps=30, batch_size=32, schedule="anneal")
    c = find_minima(land, 2, steps=30, batch_size=32, schedule="constant")
    assert not torch.equal(a.thetas, c.thetas)
    assert a.config()["schedule"] == "anneal"


def test_full_batch_training(land):
    mins = find_minima(land, 2, steps=20, batch_size=10_000, optimizer="adam", lr=0.01)
    assert mins.batch_size == land.n_train
    assert np.all(np.isfinite(mins.train_loss))


def test_divergence_is_masked_not_raised(land):
    with pytest.warns(RuntimeWarning, match="diverged"):
        mins = find_minima(land, 3, steps=40, batch_size=32, lr=1e12)
    assert mins.diverged.any()
    assert np.all(np.isnan(mins.train_loss[mins.diverged]))
    assert np.all(np.isnan(mins.test_error[mins.diverged]))
    assert torch.isfinite(mins.thetas).all()  # frozen at the last finite parameters
    assert set(mins.valid) == set(np.flatnonzero(~mins.diverged))


def test_no_warning_without_divergence(land):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        find_minima(land, 2, steps=10, batch_size=32)


def test_regression_task_has_nan_test_error():
    ds = data.load("teacher", n_train=64, n_test=32)
    model = models.build("fcn", 8, 1, ds.input_shape, ds.n_outputs, seed=0)
    land = Landscape.from_dataset(model, ds, device="cpu")
    mins = find_minima(land, 2, steps=20, batch_size=16, lr=0.01)
    assert np.all(np.isnan(mins.test_error))
    assert np.all(np.isfinite(mins.test_loss))


def test_to_arrays_roundtrip(land, tmp_path):
    mins = find_minima(land, 2, steps=10, batch_size=32)
    path = tmp_path / "m.npz"
    np.savez(path, **mins.to_arrays())
    with np.load(path) as f:
        back = Minima.from_arrays(f)
    assert torch.equal(back.thetas, mins.thetas)
    np.testing.assert_array_equal(back.train_loss, mins.train_loss)
    assert back.config() == mins.config()
    with pytest.raises(ValueError, match="lack field"):
        Minima.from_arrays({"thetas": np.zeros((2, 3))})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 1}, "k must"),
        ({"k": 2, "optimizer": "rmsprop"}, "optimizer"),
        ({"k": 2, "schedule": "cyclic"}, "schedule"),
        ({"k": 2, "lr": 0.0}, "lr"),
        ({"k": 2, "lr": float("nan")}, "lr"),
        ({"k": 2, "steps": 0}, "steps"),
        ({"k": 2, "batch_size": 0}, "batch_size"),
        ({"k": 2, "momentum": 1.0}, "momentum"),
        ({"k": 2.5}, "k must"),
    ],
)
def test_bad_input(land, kwargs, match):
    with pytest.raises(ValueError, match=match):
        find_minima(land, **kwargs)


def test_gradient_norms_are_stored_and_polish_lowers_them(land):
    plain = find_minima(land, 3, steps=60, batch_size=32, lr=0.05)
    full = torch.stack([land.grad(plain.thetas[i]).reshape(-1) for i in range(3)])
    np.testing.assert_allclose(plain.grad_norm, full.double().norm(dim=1).numpy(), rtol=1e-4)
    polished = find_minima(land, 3, steps=60, batch_size=32, lr=0.05, polish_steps=40)
    assert polished.polish_steps == 40
    # Full-batch steps with backtracking never raise the loss and bring the networks closer
    # to critical points.
    assert np.all(polished.train_loss <= plain.train_loss + 1e-7)
    assert np.all(polished.grad_norm < plain.grad_norm)
    back = Minima.from_arrays(polished.to_arrays())
    np.testing.assert_array_equal(back.grad_norm, polished.grad_norm)
    assert back.polish_steps == 40
    with pytest.raises(ValueError, match="polish_steps"):
        find_minima(land, 2, steps=5, polish_steps=-1)
