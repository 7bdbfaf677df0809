"""A loss landscape: (model, loss, data) as a batched function of flat parameter vectors.

A :class:`Landscape` turns any ``torch.nn.Module`` into a function of flat parameter vectors
``theta`` of length ``P`` (all trainable parameters, in ``named_parameters()`` order). Many
parameter vectors are evaluated together: a stack ``thetas`` of shape ``(B, P)`` goes through
``torch.func.functional_call`` under ``torch.func.vmap``, so one batched forward and one backward
pass serve all ``B`` networks (minima, path images, grid points of a slice).

Bring your own model, loss and data::

    land = Landscape.from_tensors(
        my_module,                      # any nn.Module; used in eval() mode (see below)
        x_train, y_train,               # tensors, first dimension = examples
        x_test, y_test,                 # optional
        loss_fn=torch.nn.functional.cross_entropy,   # (outputs, targets) -> scalar mean loss
        error_fn=None,                  # optional (outputs, targets) -> scalar fraction wrong
    )
    losses = land.loss(land.init(8, seed=0))       # (8,)

or, with the built-in data sets, ``Landscape.from_dataset(model, lossbarcode.data.load("digits"))``.

Requirements on the user's pieces:

* ``loss_fn(outputs, targets)`` must return the *mean* loss over the examples it is given (the
  default of every ``torch.nn.functional`` loss). Large evaluations are split into chunks of
  examples and recombined as a weighted mean, which is exact only for mean losses.
* The model must be a pure function of its parameters and input (no BatchNorm running statistics,
  no in-place parameter updates). It is copied and put in ``eval()`` mode, so dropout is off and
  the landscape is deterministic. Buffers and frozen parameters are held fixed.
* ``Landscape.init`` re-initialises a copy of the model with a fixed seed by calling every
  submodule's ``reset_parameters``; parameters that no submodule resets (e.g. a bare
  ``nn.Parameter`` embedding) are redrawn from a normal distribution with their current mean and
  standard deviation. Models made by ``lossbarcode.models.build`` are instead rebuilt from
  their recorded spec with the seed; pass ``init_fn=lambda seed: make_model(seed)`` to control
  initialisation of any other model exactly.

Speed: the built-in tasks' losses are computed for all B networks in one call
(:func:`lossbarcode.losses.batched_task_loss`), and the built-in fully connected family runs as
one "wide net" with a hand-derived gradient for the built-in classification and regression losses
(:mod:`lossbarcode.wide`, checked against vmap + autograd at construction); everything else
goes through vmap and autograd. A landscape is not thread-safe (``functional_call``
temporarily swaps the template's parameters): use one per thread.

Memory: an evaluation of ``b`` parameter vectors on ``n`` examples needs about
``b * (n * a + c * P)`` bytes, where ``a`` (bytes of activations per example) is measured once
by recording what autograd saves for one and for a few examples. Batches are processed in chunks
that fit ``memory_limit`` (default: half the free CUDA memory or half the available RAM); if even
one parameter vector on one example does not fit, construction raises ``ValueError`` before any
large allocation. On the CPU chunks are also capped near 16 MiB of activations, which keeps them
in cache (several times faster than one huge chunk).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from lossbarcode import choices, models
from lossbarcode._checks import check_int
from lossbarcode.devices import (  # available_memory, default_device: also kept for compatibility
    available_memory,
    default_device,
    mib,
)
from lossbarcode.losses import (  # batched_task_loss, LossFn: also kept here for compatibility
    BatchedLossFn,
    LossFn,
    batched_loss_task,
    batched_task_loss,
    task_error,
    task_loss,
)
from lossbarcode.seeds import derive_seed as derive_seed  # kept for compatibility
from lossbarcode.seeds import network_seeds
from lossbarcode.wide import WideFCN, wide_fcn_for

DTYPE: torch.dtype = getattr(torch, choices.DTYPE)  # the config's default dtype
MEMORY_FRACTION = 0.5  # share of free memory a landscape may plan for by default
_GRAD_FACTOR = 3.0  # activations kept for backward + their gradients + temporaries
_FORWARD_FACTOR = 1.0  # forward only: at most the activations themselves live at once
_PARAM_COPIES_GRAD = 6  # theta chunk, per-parameter grads, flat grad, optimizer-side copies
_PARAM_COPIES_FORWARD = 2
_LOSS_PROBE_EXAMPLES = 4  # examples of the batch that loss_fn is checked on
# A Hessian-vector product keeps the gradient's graph for a second backward pass: about this
# many times a gradient's activations and parameter copies (measured 2-3x; the larger bound).
HVP_FACTOR = 3.0
CPU_CHUNK_BYTES = 16 * 2**20  # activations per chunk on the CPU (cache-sized, see _plan)


@dataclass(frozen=True, eq=False, repr=False)
class Landscape:
    """The training loss of one model as a batched function of flat parameter vectors.

    Build with :meth:`from_dataset` or :meth:`from_tensors`. All methods take ``thetas`` of shape
    ``(B, P)`` (a single ``(P,)`` vector is treated as ``B = 1``) and return tensors on
    :attr:`device`.

    Attributes:
        module: private eval-mode copy of the model on ``device``/``dtype`` (the template).
        names, shapes, sizes: the trainable parameters in flat order.
        fixed: buffers and frozen parameters, held constant.
        x_train, y_train, x_test, y_test: data on ``device`` (test may be ``None``).
        eval_index: training indices used when ``batch=None`` (``None`` = all of them).
        x_eval, y_eval: those examples (the training tensors themselves when ``eval_index`` is
            ``None``), gathered once.
        loss_fn, error_fn: per-network ``(outputs, targets) -> scalar`` functions.
        batched_loss_fn: optional ``(outputs (B, n, ...), targets (B, n, ...)) -> (B,)``, the
            same loss for all B networks at once, used instead of ``vmap(loss_fn)`` (faster);
            set automatically for the built-in tasks when ``loss_fn`` is not given.
        memory_limit: bytes a single evaluation may plan for.
        act_bytes: measured bytes of saved activations per example for one network.
        wide: the "wide net" forward (and, for the built-in losses, gradient) used instead of
            vmap + autograd for the built-in FCN family (:mod:`lossbarcode.wide`), or ``None``.
    """

    module: nn.Module
    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    sizes: tuple[int, ...]
    fixed: dict[str, Tensor]
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor | None
    y_test: Tensor | None
    eval_index: Tensor | None
    x_eval: Tensor
    y_eval: Tensor
    loss_fn: LossFn
    error_fn: LossFn | None
    batched_loss_fn: BatchedLossFn | None
    device: torch.device
    dtype: torch.dtype
    memory_limit: int
    act_bytes: float = 0.0
    init_fn: Callable[[int], nn.Module] | None = None
    _cpu_template: nn.Module | None = field(default=None)
    wide: WideFCN | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dataset(
        cls,
        model: nn.Module,
        dataset: Any,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype = DTYPE,
        loss_fn: LossFn | None = None,
        error_fn: LossFn | None = None,
        eval_subset: int | None = None,
        memory_limit: int | None = None,
        init_fn: Callable[[int], nn.Module] | None = None,
    ) -> Landscape:
        """Landscape of ``model`` on a ``lossbarcode.data.Dataset`` (or anything with
        ``x_train, y_train, x_test, y_test`` tensors and a ``task`` name).

        ``loss_fn``/``error_fn`` default to ``losses.task_loss(task)`` / ``task_error(task)``.
        ``eval_subset``: evaluate ``batch=None`` losses on a fixed, seeded subset of this many
        training examples instead of the whole training set. ``memory_limit`` in bytes.
        """
        for attr in ("x_train", "y_train"):
            if not hasattr(dataset, attr):
                raise ValueError(
                    f"dataset has no {attr!r}; pass a lossbarcode.data.Dataset or use "
                    "Landscape.from_tensors(model, x_train, y_train, ...)"
                )
        task = getattr(dataset, "task", None)
        batched = batched_task_loss(task) if loss_fn is None else None
        if loss_fn is None or error_fn is None:
            if task is None and loss_fn is None:
                raise ValueError("dataset has no 'task'; pass loss_fn=... explicitly")
            if task is not None:
                if loss_fn is None:
                    loss_fn = task_loss(task)
                if error_fn is None:
                    error_fn = task_error(task)
        return cls.from_tensors(
            model,
            dataset.x_train,
            dataset.y_train,
            getattr(dataset, "x_test", None),
            getattr(dataset, "y_test", None),
            loss_fn=loss_fn,
            error_fn=error_fn,
            batched_loss_fn=batched,
            device=device,
            dtype=dtype,
            eval_subset=eval_subset,
            memory_limit=memory_limit,
            init_fn=init_fn,
        )

    @classmethod
    def from_tensors(
        cls,
        model: nn.Module,
        x_train: Tensor,
        y_train: Tensor,
        x_test: Tensor | None = None,
        y_test: Tensor | None = None,
        *,
        loss_fn: LossFn,
        error_fn: LossFn | None = None,
        batched_loss_fn: BatchedLossFn | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype = DTYPE,
        eval_subset: int | None = None,
        memory_limit: int | None = None,
        init_fn: Callable[[int], nn.Module] | None = None,
    ) -> Landscape:
        """Landscape of any ``model`` + ``loss_fn`` on explicit tensors (first dim = examples).

        ``batched_loss_fn`` (optional) computes the same loss for a stack of networks:
        ``(outputs (B, n, ...), targets (B, n, ...)) -> (B,)``; ``error_fn`` returns the
        fraction wrong (or None); see the class docstring for the other arguments."""
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise ValueError("loss_fn must be a callable (outputs, targets) -> scalar mean loss")
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point torch dtype, got {dtype}")
        dev = default_device(device)
        x_train, y_train = _as_tensor(x_train, "x_train"), _as_tensor(y_train, "y_train")
        if x_train.shape[0] == 0 or x_train.shape[0] != y_train.shape[0]:
            raise ValueError(
                f"x_train and y_train need the same non-zero number of examples, got "
                f"{x_train.shape[0]} and {y_train.shape[0]}"
            )
        if (x_test is None) != (y_test is None):
            raise ValueError("pass both x_test and y_test, or neither")
        if x_test is not None:
            x_test, y_test = _as_tensor(x_test, "x_test"), _as_tensor(y_test, "y_test")
            if x_test.shape[0] != y_test.shape[0]:
                raise ValueError("x_test and y_test need the same number of examples")

        if init_fn is None:
            init_fn = _spec_init_fn(model)
        # init() re-initialises a CPU float32 copy, so a seed means the same network anywhere.
        cpu_template = (None if init_fn is not None
                        else copy.deepcopy(model).to(device="cpu", dtype=torch.float32).eval())
        module = copy.deepcopy(model).to(device=dev, dtype=dtype).eval()
        trainable = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        if not trainable:
            raise ValueError("model has no trainable parameters (requires_grad=True)")
        names = tuple(n for n, _ in trainable)
        fixed = {n: p.detach() for n, p in module.named_parameters() if not p.requires_grad}
        fixed.update({n: b for n, b in module.named_buffers()})
        for p in module.parameters():
            p.requires_grad_(False)  # the template's own tensors are never differentiated

        n_train = x_train.shape[0]
        x_train, y_train = _to(x_train, dev, dtype), _to(y_train, dev, dtype)
        eval_index = None
        if eval_subset is not None:
            if int(eval_subset) < 1:
                raise ValueError(f"eval_subset must be a positive number of examples or None, "
                                 f"got {eval_subset}")
            if int(eval_subset) < n_train:
                g = torch.Generator().manual_seed(0)
                eval_index = torch.randperm(n_train, generator=g)[: int(eval_subset)].sort()[0]
                eval_index = eval_index.to(dev)

        land = cls(
            module=module,
            names=names,
            shapes=tuple(p.shape for _, p in trainable),
            sizes=tuple(p.numel() for _, p in trainable),
            fixed=fixed,
            x_train=x_train,
            y_train=y_train,
            x_test=None if x_test is None else _to(x_test, dev, dtype),
            y_test=None if y_test is None else _to(y_test, dev, dtype),
            eval_index=eval_index,
            x_eval=x_train if eval_index is None else x_train[eval_index],
            y_eval=y_train if eval_index is None else y_train[eval_index],
            loss_fn=loss_fn,
            error_fn=error_fn,
            batched_loss_fn=batched_loss_fn,
            device=dev,
            dtype=dtype,
            memory_limit=int(memory_limit) if memory_limit is not None
            else int(MEMORY_FRACTION * available_memory(dev)),
            init_fn=init_fn,
            _cpu_template=cpu_template,
        )
        if land.memory_limit <= 0:
            raise ValueError(f"memory_limit must be a positive number of bytes, got {memory_limit}")
        # Check the parameter-only cost first so a hopeless request fails before the probe runs.
        param_cost = land._cost(1, 0, grad=True)
        if param_cost > land.memory_limit:
            raise ValueError(
                f"one parameter vector ({land.n_params:,} parameters) needs about "
                f"{mib(param_cost)} to evaluate with gradients, over memory_limit "
                f"{mib(land.memory_limit)}; use a smaller model or raise memory_limit"
            )
        land._check_loss_fn()  # a bad loss_fn fails here, clearly, not later inside vmap
        # Built in stages, each a new frozen landscape: the probe measures a landscape without
        # act_bytes, and the wide-net check evaluates one that has them.
        land = replace(land, act_bytes=land._probe_activation_bytes())
        land = replace(land, wide=land._checked_wide())
        one = land._cost(1, 1, grad=True)
        if one > land.memory_limit:
            raise ValueError(
                f"one network on one example needs about {mib(one)} (activations "
                f"{mib(land.act_bytes)} per example), over memory_limit "
                f"{mib(land.memory_limit)}; use a smaller model or input, or raise memory_limit"
            )
        return land

    # ------------------------------------------------------------------ basic properties
    @property
    def n_params(self) -> int:
        """``P``, the length of a flat parameter vector."""
        return int(sum(self.sizes))

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_eval(self) -> int:
        """Number of training examples behind ``batch=None`` evaluations."""
        return int(self.x_eval.shape[0])

    def __repr__(self) -> str:
        return (
            f"Landscape(P={self.n_params:,}, n_train={self.n_train}, n_eval={self.n_eval}, "
            f"device={self.device}, dtype={self.dtype}, memory_limit={mib(self.memory_limit)})"
        )

    # ------------------------------------------------------------------ conversions
    def flatten(self, module: nn.Module) -> Tensor:
        """Flat ``(P,)`` vector of ``module``'s trainable parameters (same architecture)."""
        params = dict(module.named_parameters())
        missing = [n for n in self.names if n not in params]
        if missing:
            raise ValueError(f"module lacks parameters {missing[:3]}...; it must have the same "
                             "architecture as the landscape's model")
        parts = []
        for n, shape in zip(self.names, self.shapes, strict=True):
            p = params[n]
            if p.shape != shape:
                raise ValueError(f"parameter {n!r} has shape {tuple(p.shape)}, expected "
                                 f"{tuple(shape)}; same architecture required")
            parts.append(p.detach().reshape(-1).to(self.device, self.dtype))
        return torch.cat(parts)

    def params(self, theta: Tensor) -> dict[str, Tensor]:
        """Split ``theta`` of shape ``(P,)`` (or ``(B, P)``) into named views of the parameter
        shapes (with a leading ``B`` when batched)."""
        lead = theta.shape[:-1]
        if theta.shape[-1] != self.n_params:
            raise ValueError(f"theta has {theta.shape[-1]} entries, expected P={self.n_params}")
        chunks = torch.split(theta, self.sizes, dim=-1)
        return {
            n: c.reshape(*lead, *s)
            for n, s, c in zip(self.names, self.shapes, chunks, strict=True)
        }

    def unflatten(self, theta: Tensor) -> nn.Module:
        """A fresh eval-mode copy of the model (on :attr:`device`) holding parameters ``theta``
        of shape ``(P,)``."""
        theta = self.as_thetas(theta)
        if theta.shape[0] != 1:
            raise ValueError("unflatten takes a single (P,) parameter vector")
        module = copy.deepcopy(self.module)
        named = dict(module.named_parameters())
        with torch.no_grad():
            for n, v in self.params(theta[0]).items():
                named[n].copy_(v)
                named[n].requires_grad_(True)
        return module

    # ------------------------------------------------------------------ initialisation
    def init(self, k: int, seed: int = 0) -> Tensor:
        """``(k, P)`` stack of ``k`` independent initialisations; network ``i`` uses seed
        ``network_seeds(seed, k)[i]``."""
        return self.init_from_seeds(network_seeds(seed, check_int(k, "k", 1)))

    def init_from_seeds(self, seeds: Sequence[int] | np.ndarray) -> Tensor:
        """``(len(seeds), P)`` initialisations, one per seed. Initialisation runs on the CPU in
        float32, so a seed gives the same network on every device."""
        rows = []
        for s in np.asarray(seeds, dtype=np.int64).reshape(-1):
            if self.init_fn is not None:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(int(s))
                    mod = self.init_fn(int(s))
            else:
                assert self._cpu_template is not None
                mod = copy.deepcopy(self._cpu_template)
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(int(s))
                    _reset_module(mod)
            rows.append(self.flatten(mod))
        return torch.stack(rows)

    # ------------------------------------------------------------------ evaluation
    def loss(self, thetas: Tensor, batch: Any = None) -> Tensor:
        """Mean training loss of each parameter vector, shape ``(B,)``, no gradients.

        ``batch``: ``None`` (the evaluation set: all training examples, or ``eval_subset``),
        1-D training indices ``(n,)`` shared by all vectors, 2-D indices ``(B, n)`` (row ``b``
        for vector ``b``), or an explicit ``(x, y)`` pair shared by all vectors.
        """
        loss, _ = self._evaluate(thetas, batch, grad=False)
        return loss

    def loss_and_grad(self, thetas: Tensor, batch: Any = None) -> tuple[Tensor, Tensor]:
        """Losses ``(B,)`` and their gradients ``(B, P)`` (see :meth:`loss` for ``batch``)."""
        loss, grad = self._evaluate(thetas, batch, grad=True)
        assert grad is not None
        return loss, grad

    def grad(self, thetas: Tensor, batch: Any = None) -> Tensor:
        """Gradients ``(B, P)`` of the mean training loss (see :meth:`loss` for ``batch``)."""
        return self.loss_and_grad(thetas, batch)[1]

    def hvp(self, thetas: Tensor, vectors: Tensor) -> Tensor:
        """Exact Hessian-vector products of the evaluation-set loss (the loss of
        :meth:`loss` with ``batch=None``): row ``b`` of the result is ``H(thetas[b]) @
        vectors[b]``.

        ``thetas``, ``vectors``: ``(B, P)`` (a ``(P,)`` vector is ``B = 1``); returns ``(B, P)``
        on :attr:`device` in :attr:`dtype`. Computed by a second backward pass through the
        gradient of the same batched loss the landscape evaluates (the wide net's forward for
        the built-in fcn, vmap + autograd otherwise), in chunks of vectors and examples that
        fit ``memory_limit`` at :data:`HVP_FACTOR` times a gradient's cost. Piecewise-linear
        activations (ReLU) contribute their almost-everywhere second derivative, zero."""
        thetas = self.as_thetas(thetas)
        vectors = self.as_thetas(vectors)
        if vectors.shape != thetas.shape:
            raise ValueError(f"vectors must have the shape of thetas {tuple(thetas.shape)}, "
                             f"got {tuple(vectors.shape)}")
        x, y = self.x_eval, self.y_eval
        b_total, n = thetas.shape[0], x.shape[0]
        bsz, nsz = self._plan(b_total, n, grad=True, factor=HVP_FACTOR)
        out = []
        for b0 in range(0, b_total, bsz):
            tc, vc = thetas[b0 : b0 + bsz], vectors[b0 : b0 + bsz]
            acc: Tensor | None = None
            for s0, s1 in _ranges(n, nsz):
                hv = self._hvp_chunk(tc, vc, x[s0:s1], y[s0:s1])
                # mean over examples = size-weighted mean of the chunk means
                hv = hv if nsz >= n else hv * ((s1 - s0) / n)
                acc = hv if acc is None else acc + hv
            assert acc is not None
            out.append(acc)
        return torch.cat(out) if len(out) > 1 else out[0]

    def _hvp_chunk(self, thetas: Tensor, vectors: Tensor, x: Tensor, y: Tensor) -> Tensor:
        """``(b, P)`` Hessian-vector products of the mean loss on ``x, y``. Rows never mix (each
        network's loss depends on its own row only), so differentiating the sum of all rows'
        ``g . v`` gives every row's product in one pass."""
        with torch.enable_grad():
            t = thetas.detach().requires_grad_(True)
            loss = self._stack_loss(self.params(t), x, y, False)
            (g,) = torch.autograd.grad(loss.sum(), t, create_graph=True,
                                       materialize_grads=True)
            gv = (g * vectors).sum()
            if not gv.requires_grad:  # the loss is linear in the parameters: H = 0
                return torch.zeros_like(thetas)
            (hv,) = torch.autograd.grad(gv, t, materialize_grads=True)
        return hv.detach()

    def test_metrics(self, thetas: Tensor) -> tuple[Tensor, Tensor | None]:
        """Test loss ``(B,)`` and test error ``(B,)`` (``None`` without an ``error_fn``).

        Raises ``ValueError`` if the landscape has no test set."""
        if self.x_test is None or self.y_test is None:
            raise ValueError("this landscape has no test set; pass x_test/y_test")
        thetas = self.as_thetas(thetas)
        x, y = self.x_test, self.y_test
        n = x.shape[0]
        losses = torch.zeros(thetas.shape[0], device=self.device, dtype=torch.float64)
        errors = torch.zeros_like(losses) if self.error_fn is not None else None
        bsz, nsz = self._plan(thetas.shape[0], n, grad=False)
        with torch.no_grad():
            for b0 in range(0, thetas.shape[0], bsz):
                chunk = self.params(thetas[b0 : b0 + bsz])
                for s0 in range(0, n, nsz):
                    xs, ys = x[s0 : s0 + nsz], y[s0 : s0 + nsz]
                    w = xs.shape[0] / n
                    out = self._stack_forward(chunk, xs, False)
                    # A Python loop over the chunk keeps any user loss/error function usable,
                    # even ones that are not vmap-compatible; test metrics are computed rarely.
                    for i in range(out.shape[0]):
                        losses[b0 + i] += w * float(self.loss_fn(out[i], ys))
                        if errors is not None:
                            errors[b0 + i] += w * float(self.error_fn(out[i], ys))
        dt = self.dtype
        return losses.to(dt), None if errors is None else errors.to(dt)

    def test_outputs(self, thetas: Tensor) -> Tensor:
        """The model's outputs on the test set, ``(B, n_test, *output)`` (e.g. logits
        ``(B, n_test, classes)``), chunked like every evaluation. ``ValueError`` if the
        landscape has no test set."""
        if self.x_test is None:
            raise ValueError("this landscape has no test set; pass x_test/y_test")
        thetas = self.as_thetas(thetas)
        n = self.x_test.shape[0]
        bsz, nsz = self._plan(thetas.shape[0], n, grad=False)
        with torch.no_grad():
            return torch.cat([
                torch.cat([self._stack_forward(self.params(thetas[b0:b0 + bsz]),
                                               self.x_test[s0:s1], False)
                           for s0, s1 in _ranges(n, nsz)], dim=1)
                for b0 in range(0, thetas.shape[0], bsz)])

    def gather(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        """Training examples at indices ``idx`` (any shape ``S``, on :attr:`device`, unchecked):
        ``x`` of shape ``(*S, *input)`` and ``y`` of shape ``(*S, *target)``."""
        flat = idx.reshape(-1)
        # index_select on the flat index is ~3x faster than advanced indexing on the CPU.
        x = self.x_train.index_select(0, flat).view(*idx.shape, *self.x_train.shape[1:])
        y = self.y_train.index_select(0, flat).view(*idx.shape, *self.y_train.shape[1:])
        return x, y

    # ------------------------------------------------------------------ internals
    def _forward(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(self.module, (params, self.fixed), (x,))

    def _stack_loss(self, params: dict[str, Tensor], x: Tensor, y: Tensor,
                    per_vector: bool) -> Tensor:
        """Losses ``(B,)`` of stacked ``params``; ``x, y`` shared or per network."""
        out = self._stack_forward(params, x, per_vector)
        if self.batched_loss_fn is None:
            return vmap(self.loss_fn, in_dims=(0, 0 if per_vector else None))(out, y)
        if not per_vector:
            y = y.expand(out.shape[0], *y.shape)
        return self.batched_loss_fn(out, y)

    def _stack_forward(self, params: dict[str, Tensor], x: Tensor, per_vector: bool) -> Tensor:
        """Outputs ``(B, n, ...)`` of stacked ``params`` on shared or per-network ``x``."""
        if self.wide is not None:
            return self.wide.forward(params, x, per_vector)
        return vmap(self._forward, in_dims=(0, 0 if per_vector else None))(params, x)

    def as_thetas(self, thetas: Any) -> Tensor:
        """``thetas`` as a ``(B, P)`` tensor on :attr:`device` in :attr:`dtype` (a ``(P,)``
        vector becomes ``B = 1``); ``ValueError`` for a wrong shape."""
        thetas = torch.as_tensor(thetas)
        if thetas.dim() == 1:
            thetas = thetas.unsqueeze(0)
        if thetas.dim() != 2 or thetas.shape[1] != self.n_params:
            raise ValueError(f"thetas must have shape (B, P) with P={self.n_params}, got "
                             f"{tuple(thetas.shape)}")
        return thetas.to(device=self.device, dtype=self.dtype)

    def _resolve_batch(self, batch: Any, b: int) -> tuple[Tensor, Tensor, bool]:
        """(x, y, per_vector): shared batches are ``(n, ...)``; per-vector ``(B, n, ...)``."""
        if batch is None:
            return self.x_eval, self.y_eval, False
        if isinstance(batch, tuple):
            if len(batch) != 2:
                raise ValueError("a batch tuple must be (x, y)")
            x = _to(_as_tensor(batch[0], "x"), self.device, self.dtype)
            y = _to(_as_tensor(batch[1], "y"), self.device, self.dtype)
            if x.shape[0] != y.shape[0] or x.shape[0] == 0:
                raise ValueError("batch (x, y) needs the same non-zero number of examples")
            return x, y, False
        idx = torch.as_tensor(np.asarray(batch) if isinstance(batch, list) else batch)
        if idx.dtype.is_floating_point or idx.dtype == torch.bool or idx.numel() == 0:
            raise ValueError("batch indices must be a non-empty integer tensor/array")
        idx = idx.to(self.device, torch.long)
        if int(idx.min()) < 0 or int(idx.max()) >= self.n_train:
            raise ValueError(f"batch indices must lie in [0, {self.n_train})")
        if idx.dim() == 1:
            return (*self.gather(idx), False)
        if idx.dim() == 2 and idx.shape[0] == b:
            return (*self.gather(idx), True)
        raise ValueError(f"batch indices must have shape (n,) or (B, n) = ({b}, n), got "
                         f"{tuple(idx.shape)}")

    def _evaluate(self, thetas: Tensor, batch: Any, grad: bool) -> tuple[Tensor, Tensor | None]:
        thetas = self.as_thetas(thetas)
        x, y, per_vec = self._resolve_batch(batch, thetas.shape[0])
        return self.evaluate_batch(thetas, x, y, per_vector=per_vec, grad=grad)

    def evaluate_batch(
        self, thetas: Tensor, x: Tensor, y: Tensor, *, per_vector: bool = False, grad: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        """Unchecked fast path for training loops: losses ``(B,)`` and gradients ``(B, P)``
        (``None`` when ``grad=False``) on ready data already on :attr:`device` —
        ``x``/``y`` of shape ``(n, ...)``, or ``(B, n, ...)`` with ``per_vector=True``.
        ``thetas`` must be ``(B, P)`` on :attr:`device` in :attr:`dtype`."""
        b_total = thetas.shape[0]
        ex_dim = 1 if per_vector else 0
        n = x.shape[ex_dim]
        bsz, nsz = self._plan(b_total, n, grad=grad, per_vector=per_vector)
        losses, grads = [], []
        for b0 in range(0, b_total, bsz):
            sl = slice(b0, b0 + bsz)
            tc = thetas[sl] if bsz < b_total else thetas
            xc, yc = (x[sl], y[sl]) if per_vector and bsz < b_total else (x, y)
            acc_l: Tensor | None = None
            acc_g: Tensor | None = None
            for s0, s1 in _ranges(n, nsz):
                xs = xc.narrow(ex_dim, s0, s1 - s0) if nsz < n else xc
                ys = yc.narrow(ex_dim, s0, s1 - s0) if nsz < n else yc
                if grad and self.wide is not None and self.wide.task is not None:
                    lval, parts = self.wide.loss_and_grad(self.params(tc), xs, ys, per_vector)
                    g = torch.cat([parts[name].reshape(tc.shape[0], -1) for name in self.names],
                                  dim=1)
                elif grad:
                    with torch.enable_grad():
                        t = tc.detach().requires_grad_(True)
                        lval = self._stack_loss(self.params(t), xs, ys, per_vector)
                        (g,) = torch.autograd.grad(lval.sum(), t, materialize_grads=True)
                    lval = lval.detach()
                else:
                    with torch.no_grad():
                        lval = self._stack_loss(self.params(tc), xs, ys, per_vector)
                    g = None
                if nsz >= n:
                    acc_l, acc_g = lval, g
                else:  # mean over examples = size-weighted mean of the chunk means
                    w = (s1 - s0) / n
                    acc_l = w * lval if acc_l is None else acc_l + w * lval
                    if g is not None:
                        acc_g = w * g if acc_g is None else acc_g + w * g
            assert acc_l is not None
            losses.append(acc_l)
            if grad:
                assert acc_g is not None
                grads.append(acc_g)
        loss = torch.cat(losses) if len(losses) > 1 else losses[0]
        if not grad:
            return loss, None
        return loss, torch.cat(grads) if len(grads) > 1 else grads[0]

    def _cost(self, b: int, n: int, grad: bool, per_vector: bool = False,
              factor: float = 1.0) -> float:
        """Estimated peak bytes of evaluating ``b`` vectors on ``n`` examples; ``factor``
        scales a gradient's cost (:data:`HVP_FACTOR` for Hessian-vector products)."""
        es = torch.finfo(self.dtype).bits // 8
        per_ex = self.act_bytes * (_GRAD_FACTOR if grad else _FORWARD_FACTOR) * factor
        if per_vector:
            per_ex += self._input_bytes()
        copies = (_PARAM_COPIES_GRAD if grad else _PARAM_COPIES_FORWARD) * factor
        return b * (n * per_ex + copies * self.n_params * es)

    def _input_bytes(self) -> float:
        x, y = self.x_train[:1], self.y_train[:1]
        return float(x.numel() * x.element_size() + y.numel() * y.element_size())

    def _plan(self, b: int, n: int, grad: bool, per_vector: bool = False,
              factor: float = 1.0) -> tuple[int, int]:
        """Chunk sizes ``(vectors, examples)`` whose evaluation fits ``memory_limit``
        (``factor``: as in :meth:`_cost`)."""
        full = self._cost(1, n, grad, per_vector, factor)
        if full <= self.memory_limit:
            fit = int(self.memory_limit // full)
            if self.device.type == "cpu":
                # CPU kernels run several times faster when a chunk's activations stay in
                # cache (measured: 16 MiB chunks beat 200 MiB ones by 3-4x on 2 cores).
                fit = min(fit, int(CPU_CHUNK_BYTES // max(1.0, n * self.act_bytes * factor)))
            return max(1, min(b, fit)), n
        param_part = self._cost(1, 0, grad, per_vector, factor)
        per_ex = max(self._cost(1, 1, grad, per_vector, factor) - param_part, 1.0)
        n_chunk = int((self.memory_limit - param_part) // per_ex)
        if n_chunk < 1:
            raise ValueError(
                f"one network on one example needs about {mib(param_part + per_ex)}, over "
                f"memory_limit {mib(self.memory_limit)}; raise memory_limit or shrink the model"
            )
        return 1, min(n, n_chunk)

    def _check_loss_fn(self) -> None:
        """``ValueError`` unless ``loss_fn`` returns a real, finite, floating-point scalar (a
        0-d tensor) for the template network on a probe batch (the first examples, at most
        4): a vector, None, a string or a complex value would otherwise fail much later, in
        autograd or vmap, with an error that does not name ``loss_fn``."""
        n = min(_LOSS_PROBE_EXAMPLES, self.n_train)
        params = dict(zip(self.names, self._template_params(), strict=True))
        with torch.no_grad():
            out = self._forward(params, self.x_train[:n])
            try:
                loss = self.loss_fn(out, self.y_train[:n])
            except Exception as err:  # the user's function: say which call failed
                raise ValueError(f"loss_fn(outputs, targets) failed on a probe batch of {n} "
                                 f"training examples: {type(err).__name__}: {err}") from err
        what = ("loss_fn(outputs, targets) must return a real, finite scalar tensor (the mean "
                f"loss) on a probe batch of {n} training examples, got")
        if not isinstance(loss, Tensor):
            raise ValueError(f"{what} {type(loss).__name__} {str(loss)[:40]!r}")
        if loss.ndim != 0:
            raise ValueError(f"{what} a tensor of shape {tuple(loss.shape)}: reduce it (e.g. "
                             ".mean())")
        if loss.is_complex() or not loss.is_floating_point():
            raise ValueError(f"{what} a tensor of dtype {loss.dtype}")
        if not bool(torch.isfinite(loss)):
            raise ValueError(f"{what} {loss.item()} at the model's initial parameters")

    def _probe_activation_bytes(self) -> float:
        """Bytes autograd saves per example for one network, from forwards on 1 and m examples
        (the difference removes parameter tensors, which do not grow with examples)."""
        n_big = min(4, self.n_train)
        sizes = [self._saved_bytes(1)]
        if n_big > 1:
            sizes.append(self._saved_bytes(n_big))
            per_ex = (sizes[1] - sizes[0]) / (n_big - 1)
        else:
            per_ex = sizes[0]
        # Floor: the input and the output of a network must exist for every example.
        return max(per_ex, 2.0 * self._input_bytes())

    def _saved_bytes(self, n: int) -> float:
        seen: dict[int, int] = {}

        def pack(t: Tensor) -> Tensor:
            try:
                st = t.untyped_storage()
                key, nbytes = st.data_ptr(), st.nbytes()
            except (RuntimeError, NotImplementedError):
                key, nbytes = id(t), t.numel() * t.element_size()
            seen[key] = max(seen.get(key, 0), nbytes)
            return t

        params = {n_: p.detach().clone().requires_grad_(True)
                  for n_, p in zip(self.names, self._template_params(), strict=True)}
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = self._forward(params, self.x_train[:n])
            loss = self.loss_fn(out, self.y_train[:n])
        total = float(sum(seen.values()) + out.numel() * out.element_size())
        del loss, out
        return total

    def _checked_wide(self) -> WideFCN | None:
        """The wide net for this model if one exists and reproduces the vmap + autograd path
        on a probe (shared and per-network inputs): ``None`` if its forward differs (vmap is
        used), and without its gradient (``task=None``; autograd is used) if only that differs."""
        wide = wide_fcn_for(self.module, batched_loss_task(self.batched_loss_fn))
        if wide is None or self.fixed:
            return None
        base = torch.cat([p.reshape(-1) for p in self._template_params()])
        g = torch.Generator().manual_seed(0)
        noise = torch.randn(2, base.numel(), generator=g).to(self.device, self.dtype)
        thetas = base + 0.1 * noise * base.abs().mean()
        n = min(3, self.n_train)
        x, y = self.x_train[:n], self.y_train[:n]
        plain = replace(self, wide=None)
        try:
            for xs, ys, per_vector in ((x, y, False), (torch.stack([x, x.flip(0)]),
                                                       torch.stack([y, y.flip(0)]), True)):
                with torch.no_grad():
                    ref = vmap(self._forward, in_dims=(0, 0 if per_vector else None))(
                        self.params(thetas), xs)
                    if not torch.allclose(wide.forward(self.params(thetas), xs, per_vector), ref,
                                          rtol=1e-4, atol=1e-5):
                        return None
                if wide.task is not None:
                    ref_l, ref_g = plain.evaluate_batch(thetas, xs, ys, per_vector=per_vector)
                    mine = replace(self, wide=wide)
                    loss, grad = mine.evaluate_batch(thetas, xs, ys, per_vector=per_vector)
                    if not (torch.allclose(loss, ref_l, rtol=1e-4, atol=1e-6)
                            and torch.allclose(grad, ref_g, rtol=1e-3, atol=1e-5)):
                        wide = replace(wide, task=None)
        except (RuntimeError, KeyError, TypeError, AttributeError, IndexError, ValueError):
            return None
        return wide

    def _template_params(self) -> Iterator[Tensor]:
        named = dict(self.module.named_parameters())
        return (named[n] for n in self.names)


def _ranges(n: int, step: int) -> Iterator[tuple[int, int]]:
    for s in range(0, n, step):
        yield s, min(n, s + step)


def _as_tensor(value: Any, name: str) -> Tensor:
    if isinstance(value, Tensor):
        return value
    try:
        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a tensor or array, got {type(value).__name__}") from exc


def _to(t: Tensor, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Move to ``device``; floating tensors (inputs, regression targets) take ``dtype``."""
    if t.dtype.is_floating_point:
        return t.to(device=device, dtype=dtype)
    return t.to(device=device)


def _spec_init_fn(model: nn.Module) -> Callable[[int], nn.Module] | None:
    """For models made by ``lossbarcode.models.build``: rebuild from the recorded spec, so
    ``init`` reproduces the family's own initialisation exactly."""
    spec = getattr(model, "spec", None)
    if not isinstance(spec, models.ModelSpec):
        return None
    kwargs = spec.kwargs()
    return lambda seed: models.build(**kwargs, seed=seed)


def _reset_module(module: nn.Module) -> None:
    """Re-draw all parameters of ``module`` from the current global RNG state."""
    covered: set[int] = set()
    for sub in module.modules():
        reset = getattr(sub, "reset_parameters", None) or getattr(sub, "_reset_parameters", None)
        if callable(reset):
            reset()
            covered.update(id(p) for p in sub.parameters(recurse=False))
    with torch.no_grad():
        for p in module.parameters():
            if id(p) in covered or p.numel() < 2:
                continue
            std = float(p.std())
            if math.isfinite(std) and std > 0:
                p.normal_(float(p.mean()), std)
