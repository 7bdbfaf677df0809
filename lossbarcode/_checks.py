"""Argument checks shared by the engine and the torch-free modules."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def int_problem(value: Any, name: str, minimum: int) -> str | None:
    """What is wrong with ``value`` as an integer (Python or numpy, not bool) >= ``minimum``,
    or None when nothing is (for checks that list every problem at once)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        return f"{name} must be an integer >= {minimum}, got {value!r}"
    return None


def check_int(value: Any, name: str, minimum: int) -> int:
    """``value`` as an ``int`` if it is an integer (Python or numpy, not bool) >= ``minimum``;
    else ``ValueError`` naming ``name``."""
    problem = int_problem(value, name, minimum)
    if problem:
        raise ValueError(problem)
    return int(value)


def check_positive(value: Any, name: str, hint: str = "") -> float:
    """``value`` as a ``float`` if it is a finite number > 0 (not bool); else ``ValueError``
    naming ``name`` (and ``hint``, e.g. a sensible value)."""
    if not is_positive_number(value):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}"
                         + (f"; try {hint}" if hint else ""))
    return float(value)


def check_nonnegative(value: Any, name: str) -> float:
    """``value`` as a ``float`` if it is a number >= 0 (NaN is not); else ``ValueError``."""
    if not float(value) >= 0.0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return float(value)


def check_fraction(value: Any, name: str) -> float:
    """``value`` as a ``float`` if it lies strictly between 0 and 1; else ``ValueError``."""
    if not 0.0 < float(value) < 1.0:
        raise ValueError(f"{name} must be strictly between 0 and 1, got {value!r}")
    return float(value)


def is_positive_number(value: Any) -> bool:
    """True for a finite number > 0 (Python or numpy, not bool)."""
    return (not isinstance(value, bool) and isinstance(value, int | float | np.integer
                                                       | np.floating)
            and math.isfinite(value) and value > 0)
