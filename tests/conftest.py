"""Shared fixtures: a small digits set and a per-network autograd reference."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from lossbarcode import data
from lossbarcode.landscape import Landscape


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", n_train=96, n_test=48)


def _module_loss_and_grad(land: Landscape, theta: torch.Tensor, x, y):
    """Loss and flat gradient of one network through a plain nn.Module and autograd."""
    net = land.unflatten(theta)
    loss = land.loss_fn(net(x), y)
    loss.backward()
    params = dict(net.named_parameters())
    return loss.detach(), torch.cat([params[n].grad.reshape(-1) for n in land.names])


@pytest.fixture
def reference() -> Callable:
    """``reference(land, theta (P,), x, y) -> (loss, grad (P,))`` of one plain module."""
    return _module_loss_and_grad
