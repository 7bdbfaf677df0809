"""How a run was made, in words: the one-line description under every run's figures."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the engine (torch) is not needed to describe a config
    from lossbarcode.config import ExperimentConfig


def describe_config(config: ExperimentConfig, varied: Sequence[str] = ()) -> str:
    """One line saying how a run was made (for captions and figure titles); fields named in
    ``varied`` (``"width"``, ``"depth"``, ``"seed"``) are shown as varying."""
    c = config
    width = "widths varied" if "width" in varied else f"width {c.width}"
    depth = "depths varied" if "depth" in varied else f"depth {c.depth}"
    seed = "seeds varied" if "seed" in varied else f"seed {c.seed}"
    optimizer, lr, steps, polish = c.training()
    norm = f"{c.score_norm}" + (f"/{c.score_normalize}" if c.score_normalize else "")
    return (f"{c.dataset} · {c.arch} {width}, {depth} · K = {c.k} minima "
            f"({optimizer}, {c.schedule} lr {lr:g}, {steps} steps, then full batch to gradient "
            f"{c.minima_tol:g} in at most {polish})"
            + (" · aligned by re-basin" if c.align else "")
            + f" · {c.path_method} paths "
            f"({c.pairs} pairs, {c.images} images) · {c.rule.replace('_', '-')} rule · "
            f"TO-score {norm} · {seed}")
