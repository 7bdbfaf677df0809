"""Tests for lossbarcode.wide: the hand-derived wide-net gradient equals autograd."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from lossbarcode import data, models, wide
from lossbarcode.landscape import Landscape


@pytest.fixture(scope="module")
def teacher():
    return data.load("teacher", n_train=64, n_test=32)


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])
@pytest.mark.parametrize(("dataset", "task"), [("digits", "classification"),
                                               ("teacher", "regression")])
@pytest.mark.parametrize("depth", [1, 3])
def test_gradient_equals_autograd(activation, dataset, task, depth, request, reference):
    ds = request.getfixturevalue(dataset)
    model = models.build("fcn", 6, depth, ds.input_shape, ds.n_outputs, seed=1,
                         activation=activation)
    land = Landscape.from_dataset(model, ds, device="cpu")
    assert land.wide is not None and land.wide.task == task  # the hand gradient is in use
    thetas = land.init(3, seed=4)
    shared = torch.arange(0, 40, 3)
    per_network = torch.randint(0, land.n_train, (3, 9), generator=torch.Generator().manual_seed(0))
    for batch in (None, shared, per_network):
        losses, grads = land.loss_and_grad(thetas, batch)
        for b in range(3):
            idx = torch.arange(land.n_train) if batch is None else (
                batch[b] if batch.dim() == 2 else batch)
            ref_l, ref_g = reference(land, thetas[b], land.x_train[idx], land.y_train[idx])
            torch.testing.assert_close(losses[b], ref_l, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(grads[b], ref_g, rtol=1e-4, atol=1e-6)


def test_relu_kink_gets_zero_gradient(digits, reference):
    """At a pre-activation of exactly 0, ReLU's derivative is taken as 0, as autograd does."""
    model = models.build("fcn", 4, 1, digits.input_shape, digits.n_outputs, seed=0)
    land = Landscape.from_dataset(model, digits, device="cpu")
    theta = land.init(1, seed=0)
    params = land.params(theta[0])
    # Zero the first hidden unit's weights and bias: its pre-activation is 0 on every example.
    for name in ("hidden.0.weight", "hidden.0.bias"):
        params[name][0].zero_()
    _, grad = land.loss_and_grad(theta, torch.arange(20))
    ref_l, ref_g = reference(land, theta[0], land.x_train[:20], land.y_train[:20])
    torch.testing.assert_close(grad[0], ref_g, rtol=1e-4, atol=1e-7)
    assert float(land.params(grad[0])["hidden.0.weight"][0].abs().max()) == 0.0


def test_only_the_built_in_fcn_gets_a_wide_net(digits):
    model = models.build("fcn", 4, 1, digits.input_shape, digits.n_outputs, seed=0)
    assert wide.wide_fcn_for(model, "classification").task == "classification"
    assert wide.wide_fcn_for(model, "sequence").task is None  # no hand gradient for it
    assert wide.wide_fcn_for(models.build("cnn", 4, 1, digits.input_shape, 10, seed=0)) is None

    class Changed(models.FCN):
        def forward(self, x):
            return super().forward(x) * 2

    assert wide.wide_fcn_for(Changed(model.spec)) is None
    assert wide.wide_fcn_for(nn.Sequential(nn.Flatten(), nn.Linear(64, 10))) is None


def test_custom_loss_keeps_the_wide_forward_but_uses_autograd(digits, reference):
    model = models.build("fcn", 4, 1, digits.input_shape, digits.n_outputs, seed=0)

    def loss_fn(out, y):
        return torch.nn.functional.cross_entropy(out, y, label_smoothing=0.1)

    land = Landscape.from_dataset(model, digits, device="cpu", loss_fn=loss_fn)
    assert land.wide is not None and land.wide.task is None
    thetas = land.init(2, seed=0)
    _, grads = land.loss_and_grad(thetas, torch.arange(30))
    _, ref_g = reference(land, thetas[1], land.x_train[:30], land.y_train[:30])
    torch.testing.assert_close(grads[1], ref_g, rtol=1e-4, atol=1e-6)


def test_a_wrong_hand_gradient_is_caught_at_construction(digits, monkeypatch, reference):
    """The landscape checks the wide net against autograd and falls back if they differ."""
    right = wide.WideFCN.loss_and_grad

    def off_by_a_bit(self, params, x, y, per_vector):
        loss, grads = right(self, params, x, y, per_vector)
        return loss, {k: g * 1.01 for k, g in grads.items()}

    monkeypatch.setattr(wide.WideFCN, "loss_and_grad", off_by_a_bit)
    model = models.build("fcn", 4, 2, digits.input_shape, digits.n_outputs, seed=0)
    land = Landscape.from_dataset(model, digits, device="cpu")
    assert land.wide is not None and land.wide.task is None
    theta = land.init(1, seed=0)
    _, grad = land.loss_and_grad(theta, torch.arange(25))
    _, ref_g = reference(land, theta[0], land.x_train[:25], land.y_train[:25])
    torch.testing.assert_close(grad[0], ref_g, rtol=1e-4, atol=1e-6)


def test_loss_and_grad_without_a_task_is_refused(digits):
    model = models.build("fcn", 4, 1, digits.input_shape, digits.n_outputs, seed=0)
    net = dataclasses.replace(wide.wide_fcn_for(model, "classification"), task=None)
    land = Landscape.from_dataset(model, digits, device="cpu")
    with pytest.raises(ValueError, match="no hand-derived gradient"):
        net.loss_and_grad(land.params(land.init(1)), land.x_train, land.y_train, False)
