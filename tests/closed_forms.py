"""Closed-form landscapes for the tests: a model that is a point, and the functions of
design.md's ground truth (shared by the minima, curvature, paths and string-method tests)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from lossbarcode.landscape import Landscape
from lossbarcode.seeds import network_seeds

# design.md §1: exact values of the closed forms.
CAMEL_SADDLE = 0.8773615577631402
QUARTIC_MAX = 0.0025063134550511322


class Point(torch.nn.Module):
    """A model that is a point: its output is its own parameters, whatever the input."""

    def __init__(self, dim: int):
        super().__init__()
        self.theta = torch.nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        return self.theta.expand(x.shape[0], -1)


def landscape(fn: Callable, dim: int, starts: Sequence[Sequence[float]] | None = None
              ) -> Landscape:
    """A ``dim``-parameter float64 Landscape whose loss is ``fn(*theta)`` (the data are
    ignored); with ``starts``, network ``i`` of ``find_minima(land, len(starts))`` (seed
    ``network_seeds(0, K)[i]``) starts at ``starts[i]``."""
    init_fn = None
    if starts is not None:
        seeds = [int(s) for s in network_seeds(0, len(starts))]

        def init_fn(seed):
            net = Point(dim)
            with torch.no_grad():
                net.theta.copy_(torch.tensor(starts[seeds.index(seed)]))
            return net

    return Landscape.from_tensors(Point(dim), torch.zeros(1, 1), torch.zeros(1),
                                  loss_fn=lambda out, y: fn(*out[0]), dtype=torch.float64,
                                  device="cpu", init_fn=init_fn)


def camel(x, y):
    """The three-hump camel: global minimum (0, 0), minima (+-1.747552, -+0.873776) at
    0.298638, saddles (+-1.070542, -+0.535271) at 0.877362."""
    return 2 * x**2 - 1.05 * x**4 + x**6 / 6 + x * y + y**2


def quartic(x):
    """x^4 - x^2 + 0.1x: minima at -0.730893 (global) and 0.680639, maximum at 0.050254."""
    return x**4 - x**2 + 0.1 * x
