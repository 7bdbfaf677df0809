"""How many parameter vectors to materialise at once before evaluating them.

Paths and plane slices build their points (interpolated images, grid points) as ``(B, P)``
stacks; building all of them first could exceed memory long before the landscape's own
chunking starts, so they are built and evaluated in blocks of this size.
"""

from __future__ import annotations

import torch

from lossbarcode.landscape import Landscape

BLOCK_BYTES = 256 * 2**20  # cap on points materialised at once before evaluation


def items_per_block(land: Landscape, points_per_item: int) -> int:
    """How many items of ``points_per_item`` parameter vectors (each ``(P,)`` in the
    landscape's dtype) to materialise at once: under :data:`BLOCK_BYTES` and a quarter of the
    landscape's ``memory_limit``, at least 1."""
    point_bytes = land.n_params * (torch.finfo(land.dtype).bits // 8)
    cap = min(BLOCK_BYTES, max(1, land.memory_limit // 4))
    return max(1, int(cap // max(points_per_item * point_bytes, 1)))
