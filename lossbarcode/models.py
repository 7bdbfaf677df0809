"""Model families with scale knobs: fully connected, convolutional, ResNet-like, transformer.

Every model is a deterministic function of its parameters, because a loss landscape is only
defined if it is: no BatchNorm (its running statistics are wrong at points along a path between
minima; GroupNorm/LayerNorm normalise each example on its own) and no dropout. Forward passes
avoid in-place updates and data-dependent control flow, so a model works under
``torch.func.functional_call`` + ``torch.func.vmap`` over stacked parameter sets.

Shapes: image inputs ``(N, C, H, W)`` float, signal inputs ``(N, C, L)`` float (MNIST-1D),
vector inputs ``(N, d)`` float, token inputs ``(N, T)`` int64. Outputs are ``(N, n_outputs)``
(logits or regression values), and ``(N, T, n_outputs)`` next-token logits for the
transformer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lossbarcode._checks import check_int
from lossbarcode.choices import ARCHS, HEADS

__all__ = ["ARCHS", "ModelSpec", "build", "describe", "n_params"]


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "tanh": torch.tanh,
}

# options each family accepts, with defaults
_OPTIONS: dict[str, dict[str, Any]] = {
    "fcn": {"activation": "relu"},
    "cnn": {"activation": "relu", "norm": "group"},
    "resnet": {"activation": "relu"},
    "transformer": {"mlp_ratio": 4, "vocab_size": None},
}


@dataclass(frozen=True)
class ModelSpec:
    """How a model was built; ``build(**spec.kwargs())`` rebuilds the same architecture."""

    arch: str
    width: int
    depth: int
    input_shape: tuple[int, ...]
    n_outputs: int
    heads: int | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def kwargs(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("options", "heads")}
        if self.heads is not None:
            out["heads"] = self.heads
        return {**out, **self.options}


def build(
    arch: str,
    width: int,
    depth: int,
    input_shape: tuple[int, ...],
    n_outputs: int,
    *,
    heads: int = HEADS,
    seed: int | None = None,
    **options: Any,
) -> nn.Module:
    """Build a model of family ``arch`` (one of ``ARCHS``), initialised from ``seed``.

    * ``fcn``: ``depth`` hidden layers of ``width`` units; flattens any input shape.
      Options: ``activation`` ("relu", "gelu", "tanh").
    * ``cnn``: ``depth`` 3x3 conv layers (padding 1) of ``width`` channels, each followed by
      GroupNorm and the activation, then global average pooling and a linear head. Needs image
      input ``(C, H, W)``, or signal input ``(C, L)``, convolved in 1-D (kernel 3). Options:
      ``activation``, ``norm`` ("group" or "none").
    * ``resnet``: a stem, ``depth`` pre-norm residual blocks of ``width`` and a linear head.
      Images: two 3x3 convs per block with GroupNorm; anything else is flattened to a vector:
      two linear layers per block with LayerNorm. Options: ``activation``.
    * ``transformer``: decoder-only, ``d_model = width``, ``depth`` layers, ``heads`` heads,
      causal self-attention, token + learned positional embeddings, pre-LayerNorm. Input
      ``(N, T)`` int64 tokens with ``T <= input_shape[0]``; output ``(N, T, n_outputs)``.
      Options: ``mlp_ratio`` (default 4), ``vocab_size`` (input vocabulary, default
      ``n_outputs``).

    ``seed`` fixes the initialisation without touching the global RNG state; ``None`` draws
    from the global RNG. Raises ValueError for an unknown arch or option, width/depth < 1,
    or an input shape the family cannot take.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; available: {', '.join(ARCHS)}")
    width = check_int(width, "width", 1)
    depth = check_int(depth, "depth", 1)
    n_outputs = check_int(n_outputs, "n_outputs", 1)
    input_shape = _shape(input_shape)
    unknown = sorted(set(options) - set(_OPTIONS[arch]))
    if unknown:
        allowed = ", ".join(_OPTIONS[arch])
        raise ValueError(f"unknown option(s) {unknown} for arch {arch!r}; allowed: {allowed}")
    opts = {**_OPTIONS[arch], **options}
    if "activation" in opts and opts["activation"] not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {opts['activation']!r}; choose from {', '.join(ACTIVATIONS)}"
        )
    if arch == "transformer":
        heads = check_int(heads, "heads", 1)
        if width % heads:
            raise ValueError(
                f"transformer width (d_model) {width} is not divisible by heads={heads}; "
                "pick a width that is a multiple of heads"
            )
    spec = ModelSpec(
        arch=arch,
        width=width,
        depth=depth,
        input_shape=input_shape,
        n_outputs=n_outputs,
        heads=heads if arch == "transformer" else None,
        options={k: opts[k] for k in _OPTIONS[arch]},
    )
    if seed is None:
        model = _FAMILIES[arch](spec)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _FAMILIES[arch](spec)
    model.spec = spec
    return model


def n_params(model: nn.Module) -> int:
    """Number of scalar parameters in ``model``."""
    return sum(p.numel() for p in model.parameters())


def describe(model: nn.Module) -> dict[str, Any]:
    """A JSON-friendly summary: ``n_params`` always; arch, width, depth, etc. when built here."""
    out: dict[str, Any] = {"n_params": n_params(model)}
    spec = getattr(model, "spec", None)
    if isinstance(spec, ModelSpec):
        out.update(asdict(spec))
        out["input_shape"] = list(spec.input_shape)
        if spec.heads is None:
            del out["heads"]
    else:
        out["arch"] = type(model).__name__
    return out


# ------------------------------------------------------------------------------------ helpers


def _shape(input_shape: Any) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in input_shape)
    except TypeError as err:
        raise ValueError(f"input_shape must be a tuple of ints, got {input_shape!r}") from err
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"input_shape must be non-empty with positive sizes, got {shape}")
    return shape


def _groups(channels: int) -> int:
    """GroupNorm groups: up to 8, always dividing ``channels``."""
    return math.gcd(channels, 8)


# ----------------------------------------------------------------------------------- families


class FCN(nn.Module):
    """``(N, *input_shape) -> (N, n_outputs)``: flatten, ``depth`` hidden layers, linear head."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        d_in = math.prod(spec.input_shape)
        sizes = [d_in] + [spec.width] * spec.depth
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:], strict=False))
        self.head = nn.Linear(spec.width, spec.n_outputs)
        self.act = ACTIVATIONS[spec.options["activation"]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        for layer in self.hidden:
            h = self.act(layer(h))
        return self.head(h)


class CNN(nn.Module):
    """``(N, C, H, W)`` or ``(N, C, L) -> (N, n_outputs)``: ``depth`` conv-norm-act layers (2-D
    for images, 1-D for signals), average pool, linear."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        if len(spec.input_shape) not in (2, 3):
            raise ValueError(
                f"arch 'cnn' needs image input (C, H, W) or signal input (C, L), got "
                f"input_shape={spec.input_shape}; use 'fcn' or 'resnet' for vectors"
            )
        conv = nn.Conv2d if len(spec.input_shape) == 3 else nn.Conv1d
        self.pool_dims = tuple(range(2, len(spec.input_shape) + 1))  # the spatial dimensions
        channels = [spec.input_shape[0]] + [spec.width] * spec.depth
        self.convs = nn.ModuleList(
            conv(a, b, 3, padding=1) for a, b in zip(channels, channels[1:], strict=False)
        )
        group_norm = spec.options["norm"] == "group"
        if spec.options["norm"] not in ("group", "none"):
            raise ValueError(f"cnn norm must be 'group' or 'none', got {spec.options['norm']!r}")
        self.norms = nn.ModuleList(
            nn.GroupNorm(_groups(spec.width), spec.width) if group_norm else nn.Identity()
            for _ in range(spec.depth)
        )
        self.head = nn.Linear(spec.width, spec.n_outputs)
        self.act = ACTIVATIONS[spec.options["activation"]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for conv, norm in zip(self.convs, self.norms, strict=True):
            h = self.act(norm(conv(h)))
        return self.head(h.mean(dim=self.pool_dims))


class _ConvBlock(nn.Module):
    """Pre-activation residual block: ``h + conv(act(gn(conv(act(gn(h))))))``, shape kept."""

    def __init__(self, width: int, act: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(width), width)
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(width), width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.act = act

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        r = self.conv1(self.act(self.norm1(h)))
        return h + self.conv2(self.act(self.norm2(r)))


class _MLPBlock(nn.Module):
    """Pre-norm residual MLP block: ``h + fc2(act(fc1(ln(h))))``, shape ``(N, width)`` kept."""

    def __init__(self, width: int, act: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.act = act

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(self.act(self.fc1(self.norm(h))))


class ResNet(nn.Module):
    """``(N, C, H, W)`` or ``(N, d) -> (N, n_outputs)``: stem, ``depth`` blocks, norm, head."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        act = ACTIVATIONS[spec.options["activation"]]
        w = spec.width
        self.image = len(spec.input_shape) == 3
        if self.image:
            self.stem = nn.Conv2d(spec.input_shape[0], w, 3, padding=1)
            self.blocks = nn.ModuleList(_ConvBlock(w, act) for _ in range(spec.depth))
            self.norm = nn.GroupNorm(_groups(w), w)
        else:
            self.stem = nn.Linear(math.prod(spec.input_shape), w)
            self.blocks = nn.ModuleList(_MLPBlock(w, act) for _ in range(spec.depth))
            self.norm = nn.LayerNorm(w)
        self.head = nn.Linear(w, spec.n_outputs)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x if self.image else x.flatten(1))
        for block in self.blocks:
            h = block(h)
        h = self.act(self.norm(h))
        if self.image:
            h = h.mean(dim=(2, 3))
        return self.head(h)


class _CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention on ``(N, T, d)``.

    Written out (masked softmax) instead of ``scaled_dot_product_attention``, whose CPU kernel
    has no vmap batching rule and falls back to a slow per-model loop.
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        n, t, d = h.shape
        q, k, v = self.qkv(h).view(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-2, -1) / math.sqrt(d // self.heads)  # (N, heads, T, T)
        future = torch.ones(t, t, dtype=torch.bool, device=h.device).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
        y = scores.softmax(dim=-1) @ v  # (N, heads, T, d_head)
        return self.out(y.transpose(1, 2).reshape(n, t, d))


class _TransformerBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = _CausalSelfAttention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, mlp_ratio * width)
        self.fc2 = nn.Linear(mlp_ratio * width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.attn(self.norm1(h))
        return h + self.fc2(F.gelu(self.fc1(self.norm2(h))))


class Transformer(nn.Module):
    """``(N, T)`` int64 tokens ``-> (N, T, n_outputs)`` next-token logits, causal."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        if len(spec.input_shape) != 1:
            raise ValueError(
                f"arch 'transformer' needs token sequences with input_shape=(T,), got "
                f"{spec.input_shape}; use 'cnn', 'resnet' or 'fcn' for images and vectors"
            )
        mlp_ratio = check_int(spec.options["mlp_ratio"], "mlp_ratio", 1)
        vocab = spec.options["vocab_size"]
        vocab = spec.n_outputs if vocab is None else check_int(vocab, "vocab_size", 1)
        w = spec.width
        self.max_len = spec.input_shape[0]
        self.embed = nn.Embedding(vocab, w)
        self.pos = nn.Parameter(0.02 * torch.randn(self.max_len, w))
        self.blocks = nn.ModuleList(
            _TransformerBlock(w, spec.heads, mlp_ratio) for _ in range(spec.depth)
        )
        self.norm = nn.LayerNorm(w)
        self.head = nn.Linear(w, spec.n_outputs)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[1]
        if t > self.max_len:
            raise ValueError(f"sequence length {t} exceeds the model's maximum {self.max_len}")
        h = self.embed(tokens) + self.pos[:t]
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h))


_FAMILIES: dict[str, Callable[[ModelSpec], nn.Module]] = {
    "fcn": FCN,
    "cnn": CNN,
    "resnet": ResNet,
    "transformer": Transformer,
}
