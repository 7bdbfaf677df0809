"""Re-basin: align minima by the hidden-unit permutations that leave a network's function
unchanged (Ainsworth, Hayase and Srinivasa, "Git Re-Basin", ICLR 2023, weight matching).

Permuting the hidden units of a layer (rows of its weight and bias, the matching columns of the
next layer's weight) gives another parameter vector with the very same function, so the same
minimum appears ``width!`` times per layer in parameter space. Two minima found from different
seeds are usually related by such a permutation *and* something else; the straight line and the
optimised paths between them have to climb over whatever the permutation hides. Aligning every
minimum to a reference minimum first (:func:`align_minima`) removes that part: the barriers and
the TO-score measured after alignment are the part of the barrier that is not symmetry.

Weight matching (the paper's Algorithm 1) maximises ``sum_l <W_l^ref, P_l W_l P_{l-1}^T>`` over
the permutations ``P_l`` of the hidden layers by coordinate descent: each step solves one linear
assignment problem (:func:`scipy.optimize.linear_sum_assignment`) for one ``P_l``, holding the
others, on the summed similarities of every parameter that ``P_l`` acts on (the layer's weight,
bias and norm scale/shift, and the next layer's incoming weight); sweeps go over the layers from
the input until no permutation changes. (The paper visits the layers in a random order; from
the input, the first layer's assignment is anchored by the fixed inputs.)

Supported: the built-in ``fcn`` and ``cnn`` families (:data:`~lossbarcode.choices.ALIGN_ARCHS`).
The ``cnn``'s GroupNorm normalises fixed, contiguous groups of channels, so its symmetries only
permute channels within a group and whole groups among themselves: the assignment for such a
layer is solved exactly under that constraint (an assignment within each pair of groups, then
one between groups). A permuted parameter vector holds the same numbers in another order, so
alignment changes no loss, gradient norm or Hessian spectrum: only round-off of sums taken in
another order.

Shapes: a flat parameter vector ``theta`` is ``(P,)`` in the landscape's flat order (the
model's ``named_parameters()``, see :mod:`lossbarcode.landscape`); a stack is ``(K, P)``.
Permutations are tuples of one ``(n_l,)`` int64 array per hidden layer: ``perm[i]`` is the unit
of ``theta`` that becomes unit ``i`` of the aligned vector.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from lossbarcode import models
from lossbarcode.choices import ALIGN_ARCHS, ALIGN_MAX_SWEEPS

__all__ = ["ALIGN_ARCHS", "Alignment", "PermutationSpec", "align_found", "align_minima",
           "apply_permutation", "identical_predictions",
           "identical_prediction_pairs", "permutation_spec", "weight_matching"]

Permutation = tuple[np.ndarray, ...]


@dataclass(frozen=True)
class PermutationSpec:
    """How the hidden-unit permutations of one architecture act on its flat vectors.

    Attributes:
        names, shapes: the parameters in flat order (``named_parameters()``).
        offsets: ``(n_params + 1,)`` where each parameter starts in the flat vector.
        units: units (or channels) of each hidden layer ``l``, i.e. the size of ``P_l``.
        group_size: channels per normalisation group of each hidden layer (``units[l]`` when
            any permutation is a symmetry).
        axes: per hidden layer, the ``(parameter index, axis)`` pairs ``P_l`` permutes.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    offsets: tuple[int, ...]
    units: tuple[int, ...]
    group_size: tuple[int, ...]
    axes: tuple[tuple[tuple[int, int], ...], ...]

    @property
    def n_params(self) -> int:
        return self.offsets[-1]

    def identity(self) -> Permutation:
        """The permutations that change nothing."""
        return tuple(np.arange(n, dtype=np.int64) for n in self.units)

    def blocks(self, theta: np.ndarray) -> list[np.ndarray]:
        """``theta`` ``(P,)`` split into its parameters, each in its own shape (views)."""
        return [theta[a:b].reshape(s) for a, b, s in
                zip(self.offsets[:-1], self.offsets[1:], self.shapes, strict=True)]


def permutation_spec(spec: models.ModelSpec) -> PermutationSpec:
    """The :class:`PermutationSpec` of a model built by :func:`lossbarcode.models.build` with
    ``spec`` (``model.spec``; a :class:`~lossbarcode.landscape.Landscape`'s is
    ``land.module.spec``). ``ValueError`` for an architecture other than
    :data:`ALIGN_ARCHS`."""
    if not isinstance(spec, models.ModelSpec) or spec.arch not in ALIGN_ARCHS:
        arch = spec.arch if isinstance(spec, models.ModelSpec) else type(spec).__name__
        raise ValueError(f"re-basin alignment supports the built-in architectures "
                         f"{', '.join(ALIGN_ARCHS)}, not {arch!r}; run it without align")
    model = models.build(**spec.kwargs(), seed=0)
    named = [(n, tuple(p.shape)) for n, p in model.named_parameters()]
    names = tuple(n for n, _ in named)
    shapes = tuple(s for _, s in named)
    offsets = (0, *np.cumsum([math.prod(s) for s in shapes]).tolist())
    layer, head = ("hidden", "head") if spec.arch == "fcn" else ("convs", "head")
    axes: list[list[tuple[int, int]]] = [[] for _ in range(spec.depth)]
    for index, name in enumerate(names):
        found = re.fullmatch(rf"(?:{layer}|norms)\.(\d+)\.(weight|bias)", name)
        if found:
            l_ = int(found.group(1))
            axes[l_].append((index, 0))
            if found.group(2) == "weight" and name.startswith(layer) and l_ > 0:
                axes[l_ - 1].append((index, 1))
        elif name == f"{head}.weight":
            axes[spec.depth - 1].append((index, 1))
        elif name != f"{head}.bias":
            raise AssertionError(f"unexpected parameter {name!r} in a {spec.arch}")
    grouped = spec.arch == "cnn" and spec.options.get("norm") == "group"
    group_size = (spec.width // math.gcd(spec.width, 8) if grouped else spec.width)
    return PermutationSpec(names=names, shapes=shapes, offsets=tuple(offsets),
                           units=(spec.width,) * spec.depth,
                           group_size=(group_size,) * spec.depth,
                           axes=tuple(tuple(a) for a in axes))


def _as_numpy(theta: Any) -> tuple[np.ndarray, Any]:
    """``(array, torch-like original or None)``: tensors are read on the CPU."""
    if hasattr(theta, "detach"):
        return theta.detach().cpu().numpy(), theta
    return np.asarray(theta), None


def _check_perm(pspec: PermutationSpec, perm: Sequence[np.ndarray]) -> Permutation:
    if len(perm) != len(pspec.units):
        raise ValueError(f"expected {len(pspec.units)} permutations (one per hidden layer), "
                         f"got {len(perm)}")
    out = []
    for l_, (p, n, g) in enumerate(zip(perm, pspec.units, pspec.group_size, strict=True)):
        p = np.asarray(p, dtype=np.int64)
        if p.shape != (n,) or not np.array_equal(np.sort(p), np.arange(n)):
            raise ValueError(f"permutation {l_} must be a permutation of range({n})")
        groups = p.reshape(-1, g) // g
        if not (groups == groups[:, :1]).all():
            raise ValueError(f"permutation {l_} breaks the normalisation groups of {g} "
                             "channels: it would change the function")
        out.append(p)
    return tuple(out)


def _permute(pspec: PermutationSpec, theta: np.ndarray, perm: Permutation,
             skip: int | None = None) -> list[np.ndarray]:
    """The parameters of ``theta`` ``(P,)`` with every ``perm[l]`` applied but ``perm[skip]``."""
    blocks = pspec.blocks(theta)
    for l_, touched in enumerate(pspec.axes):
        if l_ == skip:
            continue
        for index, axis in touched:
            blocks[index] = np.take(blocks[index], perm[l_], axis=axis)
    return blocks


def apply_permutation(pspec: PermutationSpec, theta: Any, perm: Sequence[np.ndarray]) -> Any:
    """``theta`` ``(P,)`` (or a stack ``(K, P)``, each row permuted alike) with the hidden units
    of every layer reordered by ``perm``: the same numbers in another order, the same function.
    Returns the input's type (a torch tensor stays a tensor, same dtype and device)."""
    array, tensor = _as_numpy(theta)
    perm = _check_perm(pspec, perm)
    if array.shape[-1] != pspec.n_params or array.ndim not in (1, 2):
        raise ValueError(f"theta must have shape (P,) or (K, P) with P={pspec.n_params}, got "
                         f"{array.shape}")
    rows = array.reshape(-1, pspec.n_params)
    out = np.stack([np.concatenate([b.reshape(-1) for b in _permute(pspec, row, perm)])
                    for row in rows]).reshape(array.shape)
    if tensor is None:
        return out
    import torch

    return torch.as_tensor(out).to(device=tensor.device, dtype=tensor.dtype)


def _assign(similarity: np.ndarray, group_size: int) -> np.ndarray:
    """The permutation ``c`` maximising ``sum_i similarity[i, c[i]]`` among those that map
    whole contiguous groups of ``group_size`` onto groups (exact: an assignment in every pair
    of groups, then one between groups on the best values)."""
    n = similarity.shape[0]
    if group_size in (1, n):
        return linear_sum_assignment(similarity, maximize=True)[1].astype(np.int64)
    g = n // group_size
    blocks = similarity.reshape(g, group_size, g, group_size).transpose(0, 2, 1, 3)
    inner = np.empty((g, g, group_size), dtype=np.int64)
    value = np.empty((g, g))
    for a in range(g):
        for b in range(g):
            rows, cols = linear_sum_assignment(blocks[a, b], maximize=True)
            inner[a, b] = cols
            value[a, b] = blocks[a, b][rows, cols].sum()
    perm = np.empty(n, dtype=np.int64)
    for a, b in zip(*linear_sum_assignment(value, maximize=True), strict=True):
        perm[a * group_size:(a + 1) * group_size] = b * group_size + inner[a, b]
    return perm


def weight_matching(pspec: PermutationSpec, reference: Any, theta: Any,
                    max_sweeps: int = ALIGN_MAX_SWEEPS) -> Permutation:
    """The permutations that bring ``theta`` ``(P,)`` closest to ``reference`` ``(P,)`` in the
    sense of weight matching (largest summed inner product of corresponding weights, i.e.
    smallest Euclidean distance), by coordinate descent over the hidden layers.

    A step replaces ``P_l`` only when its assignment strictly increases the objective, so the
    sweeps end; ``max_sweeps`` bounds them (the result is a symmetry either way).
    ``apply_permutation(pspec, theta, perm)`` is the aligned vector. ``ValueError`` for
    non-finite entries (a diverged network)."""
    ref, _ = _as_numpy(reference)
    other, _ = _as_numpy(theta)
    ref, other = ref.astype(np.float64), other.astype(np.float64)
    for name, v in (("reference", ref), ("theta", other)):
        if v.shape != (pspec.n_params,):
            raise ValueError(f"{name} must have shape (P,) with P={pspec.n_params}, got "
                             f"{v.shape}")
        if not np.isfinite(v).all():
            raise ValueError(f"{name} has non-finite entries (a diverged network): it cannot "
                             "be aligned")
    ref_blocks = pspec.blocks(ref)
    perm = list(pspec.identity())
    for _ in range(max_sweeps):
        changed = False
        for l_, touched in enumerate(pspec.axes):
            blocks = _permute(pspec, other, tuple(perm), skip=l_)
            n = pspec.units[l_]
            similarity = np.zeros((n, n))
            for index, axis in touched:
                a = np.moveaxis(ref_blocks[index], axis, 0).reshape(n, -1)
                b = np.moveaxis(blocks[index], axis, 0).reshape(n, -1)
                similarity += a @ b.T
            new = _assign(similarity, pspec.group_size[l_])
            old_value = similarity[np.arange(n), perm[l_]].sum()
            new_value = similarity[np.arange(n), new].sum()
            if new_value > old_value + 1e-12 * max(1.0, abs(old_value)):
                perm[l_] = new
                changed = True
        if not changed:
            break
    return tuple(perm)


@dataclass(frozen=True)
class Alignment:
    """K minima aligned to one of them.

    Attributes:
        thetas: ``(K, P)`` the aligned vectors (the reference and skipped rows unchanged).
        reference: index of the reference minimum.
        permutations: per minimum, its :data:`Permutation` (identity for the reference and the
            skipped rows).
        distance_before, distance_after: ``(K,)`` Euclidean distance of each minimum to the
            reference before and after alignment (NaN for skipped rows).
        skipped: ``(K,)`` bool, rows left as they were (non-finite: diverged).
    """

    thetas: Any
    reference: int
    permutations: tuple[Permutation, ...]
    distance_before: np.ndarray
    distance_after: np.ndarray
    skipped: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: reference, permutations (lists), distances (null = NaN), skipped."""
        def floats(values: np.ndarray) -> list[float | None]:
            return [float(v) if np.isfinite(v) else None for v in values]

        return {"reference": self.reference,
                "permutations": [[p.tolist() for p in perm] for perm in self.permutations],
                "distance_before": floats(self.distance_before),
                "distance_after": floats(self.distance_after),
                "skipped": self.skipped.tolist()}


def align_minima(pspec: PermutationSpec, thetas: Any, reference: int = 0,
                 max_sweeps: int = ALIGN_MAX_SWEEPS) -> Alignment:
    """Every row of ``thetas`` ``(K, P)`` permuted by :func:`weight_matching` onto row
    ``reference``. Rows with non-finite entries (diverged networks) are left as they are and
    marked ``skipped``; a non-finite reference is refused (``ValueError``)."""
    array, tensor = _as_numpy(thetas)
    if array.ndim != 2 or array.shape[1] != pspec.n_params:
        raise ValueError(f"thetas must have shape (K, P) with P={pspec.n_params}, got "
                         f"{array.shape}")
    k = array.shape[0]
    if not (isinstance(reference, int | np.integer) and 0 <= reference < k):
        raise ValueError(f"reference must be a minimum index in [0, {k}), got {reference!r}")
    finite = np.isfinite(array).all(axis=1)
    if not finite[reference]:
        raise ValueError(f"reference minimum {reference} has non-finite parameters (diverged); "
                         "choose another")
    perms, rows = [], []
    for i in range(k):
        perm = (weight_matching(pspec, array[reference], array[i], max_sweeps)
                if finite[i] and i != reference else pspec.identity())
        perms.append(perm)
        rows.append(apply_permutation(pspec, array[i], perm) if finite[i] else array[i])
    aligned = np.stack(rows).astype(array.dtype)
    ref = array[reference].astype(np.float64)

    def distances(stack: np.ndarray) -> np.ndarray:
        out = np.linalg.norm(stack.astype(np.float64) - ref, axis=1)
        return np.where(finite, out, np.nan)

    if tensor is not None:
        import torch

        out: Any = torch.as_tensor(aligned).to(device=tensor.device, dtype=tensor.dtype)
    else:
        out = aligned
    return Alignment(thetas=out, reference=int(reference), permutations=tuple(perms),
                     distance_before=distances(array), distance_after=distances(aligned),
                     skipped=~finite)


def identical_prediction_pairs(predictions: np.ndarray) -> list[tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j``, of networks whose predictions agree everywhere:
    ``predictions`` is ``(K, N)`` (e.g. the predicted class of N test examples per network;
    any trailing dimensions are compared too)."""
    predictions = np.asarray(predictions)
    k = predictions.shape[0]
    flat = predictions.reshape(k, -1)
    return [(i, j) for i in range(k) for j in range(i + 1, k)
            if np.array_equal(flat[i], flat[j])]


# A permuted vector sums the same terms in another order: its loss may differ by round-off only.
LOSS_RTOL = 1e-5


def align_found(land: Any, found: Any, max_sweeps: int = ALIGN_MAX_SWEEPS
                ) -> tuple[Any, Alignment]:
    """``(aligned minima, alignment)``: the :class:`~lossbarcode.minima.Minima` ``found`` of
    landscape ``land`` (a model built by :func:`lossbarcode.models.build`) with every minimum
    permuted onto the reference, the valid minimum of lowest training loss. Everything but the
    parameters is kept: losses, gradient norms and curvature are those of the same function
    (a permutation is an orthogonal map), and the births stay identical. Checked: the
    recomputed training loss of every valid minimum equals its stored one to
    :data:`LOSS_RTOL` (else ``RuntimeError``: the permutation changed the function)."""
    import dataclasses

    spec = getattr(land.module, "spec", None)
    if not isinstance(spec, models.ModelSpec):
        raise ValueError("re-basin alignment needs a model built by lossbarcode.models.build "
                         f"(arch {', '.join(ALIGN_ARCHS)}), not a user's module")
    pspec = permutation_spec(spec)
    valid = found.valid
    if valid.size == 0:
        raise ValueError("every minimum diverged: there is nothing to align")
    reference = int(valid[np.argmin(found.train_loss[valid])])
    alignment = align_minima(pspec, found.thetas, reference, max_sweeps)
    before = found.train_loss[valid]
    after = land.loss(alignment.thetas[valid]).double().cpu().numpy()
    drift = np.abs(after - before)
    if not (drift <= LOSS_RTOL * np.maximum(1.0, np.abs(before))).all():
        worst = int(valid[np.argmax(drift)])
        raise RuntimeError(f"alignment changed the training loss of minimum {worst} by "
                           f"{drift.max():.3g}: the permutation is not a symmetry (a bug)")
    return dataclasses.replace(found, thetas=alignment.thetas), alignment


def identical_predictions(land: Any, found: Any) -> list[dict[str, Any]] | None:
    """Pairs of valid minima whose predicted classes (argmax of the outputs) agree on every
    test example: ``[{"pair": [i, j], "max_output_difference": float}]``, the second the
    largest absolute difference of their outputs (logits) there, ~0 only for the same
    function. None when not defined: no test set, or a regression task (no test error)."""
    valid = found.valid
    if land.x_test is None or not np.isfinite(found.test_error[valid]).all():
        return None
    outputs = land.test_outputs(found.thetas[valid]).double().cpu().numpy()
    pairs = identical_prediction_pairs(outputs.argmax(axis=-1))
    return [{"pair": [int(valid[i]), int(valid[j])],
             "max_output_difference": float(np.abs(outputs[i] - outputs[j]).max())}
            for i, j in pairs]
