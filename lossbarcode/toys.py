"""Analytic test landscapes with known minima, for teaching and for checking the topology core.

Each function is vectorised over points: it takes an array of shape ``(..., d)`` and returns
shape ``(...)``. :data:`TOYS` maps a name to a :class:`Toy` carrying the function, its usual
domain and a short description.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def _split(points: np.ndarray, dim: int) -> tuple[np.ndarray, ...]:
    p = np.asarray(points, dtype=np.float64)
    if p.shape[-1:] != (dim,):
        raise ValueError(f"points must have shape (..., {dim}), got {p.shape}")
    return tuple(p[..., i] for i in range(dim))


def quartic(points: np.ndarray) -> np.ndarray:
    """f(x) = x⁴ − x² + 0.1x: two minima of different depth, one maximum between them."""
    (x,) = _split(points, 1)
    return x**4 - x**2 + 0.1 * x


def three_hump_camel(points: np.ndarray) -> np.ndarray:
    """f(x, y) = 2x² − 1.05x⁴ + x⁶/6 + xy + y²: global minimum at the origin, two side minima."""
    x, y = _split(points, 2)
    return 2 * x**2 - 1.05 * x**4 + x**6 / 6 + x * y + y**2


def two_saddle(points: np.ndarray) -> np.ndarray:
    """f(x, y) = 2(x² + y² − 1)² + y² + 0.3y + 0.1x: two minima on a ring, joined by two channels.

    The ring ``x² + y² = 1`` holds the two minima and the two channels between them, one above
    and one below the straight segment between the minima, whose saddles have different
    heights; the segment itself crosses the ridge of a central maximum. Its critical points
    (Newton on the gradient, checked to 1e-9 in ``tests/test_string_method.py``):

    * global minimum (−0.996066700, −0.142830285), f = −0.121740292;
    * minimum (0.980956453, −0.158056231), f = 0.075985299;
    * lower saddle, below the segment: (0.060162101, −0.888036330), f = 0.614552241;
    * upper saddle, above the segment: (0.042414618, 0.838743873), f = 1.133063541;
    * maximum (0.012533527, 0.050178973), f = 2.008139211.

    So the higher minimum dies at the lower saddle (barcode [−0.121740, ∞),
    [0.075985, 0.614552]); the straight segment between the minima peaks near 1.89, and a
    path optimised through the upper channel stops at the upper saddle (a local MEP that is
    not the lowest).
    """
    x, y = _split(points, 2)
    return 2 * (x**2 + y**2 - 1) ** 2 + y**2 + 0.3 * y + 0.1 * x


def six_hump_camel(points: np.ndarray) -> np.ndarray:
    """f(x, y) = (4 − 2.1x² + x⁴/3)x² + xy + (−4 + 4y²)y²: six minima, two of them global."""
    x, y = _split(points, 2)
    return (4 - 2.1 * x**2 + x**4 / 3) * x**2 + x * y + (-4 + 4 * y**2) * y**2


def himmelblau(points: np.ndarray) -> np.ndarray:
    """f(x, y) = (x² + y − 11)² + (x + y² − 7)²: four global minima of value 0."""
    x, y = _split(points, 2)
    return (x**2 + y - 11) ** 2 + (x + y**2 - 7) ** 2


def rastrigin(points: np.ndarray) -> np.ndarray:
    """f(x, y) = 20 + Σ (xᵢ² − 10 cos 2πxᵢ): a lattice of local minima around a global one."""
    x, y = _split(points, 2)
    return 20 + x**2 - 10 * np.cos(2 * np.pi * x) + y**2 - 10 * np.cos(2 * np.pi * y)


@dataclass(frozen=True)
class Toy:
    """A named test function on a box domain ``bounds`` of shape ``(d, 2)``."""

    name: str
    title: str
    f: Callable[[np.ndarray], np.ndarray]
    bounds: tuple[tuple[float, float], ...]
    description: str

    @property
    def dim(self) -> int:
        return len(self.bounds)

    def grid(self, resolution: int) -> tuple[list[np.ndarray], np.ndarray]:
        """Evaluate on a regular grid with ``resolution`` points per axis.

        Returns:
            (axes, values): ``d`` coordinate vectors of shape ``(resolution,)`` and the values,
            shape ``(resolution,) * d`` indexed as ``values[i_x, i_y, ...]``.
        """
        if int(resolution) != resolution or resolution < 2:
            raise ValueError(f"resolution must be an integer >= 2, got {resolution}")
        axes = [np.linspace(lo, hi, int(resolution)) for lo, hi in self.bounds]
        mesh = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
        return axes, self.f(mesh)


TOYS: dict[str, Toy] = {
    toy.name: toy
    for toy in (
        Toy("quartic", "Quartic (1-D)", quartic, ((-1.2, 1.2),),
            "Two minima of different depth: one finite bar from the shallow minimum to the hump."),
        Toy("three_hump_camel", "Three-hump camel", three_hump_camel, ((-2.0, 2.0), (-2.0, 2.0)),
            "A global minimum at the origin and two shallower side minima behind saddles."),
        Toy("two_saddle", "Two-saddle ring", two_saddle, ((-1.6, 1.6), (-1.6, 1.6)),
            "Two minima joined by two channels whose saddles differ: the lower one decides."),
        Toy("six_hump_camel", "Six-hump camel", six_hump_camel, ((-2.0, 2.0), (-1.0, 1.0)),
            "Six minima; two global ones give two long-lived components."),
        Toy("himmelblau", "Himmelblau", himmelblau, ((-5.0, 5.0), (-5.0, 5.0)),
            "Four minima of equal value 0: tie-breaking by index decides which bar is infinite."),
        Toy("rastrigin", "Rastrigin", rastrigin, ((-5.12, 5.12), (-5.12, 5.12)),
            "A lattice of ~100 local minima: a long barcode, like a narrow network's loss."),
    )
}


def get(name: str) -> Toy:
    """The toy called ``name``; ``ValueError`` listing the names if there is none."""
    if name not in TOYS:
        raise ValueError(f"unknown toy function {name!r}; choose one of {sorted(TOYS)}")
    return TOYS[name]
