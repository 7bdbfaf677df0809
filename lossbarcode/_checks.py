"""Argument checks shared by the engine and the torch-free modules."""

from __future__ import annotations

from typing import Any

import numpy as np


def check_int(value: Any, name: str, minimum: int) -> int:
    """``value`` as an ``int`` if it is an integer (Python or numpy, not bool) >= ``minimum``;
    else ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
