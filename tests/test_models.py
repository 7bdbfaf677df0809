"""Tests for lossbarcode.models: shapes, vmap equivalence, scaling, validation, training."""

import pytest
import torch
from torch.func import functional_call, stack_module_state, vmap

from lossbarcode import data, models

# a tiny input per arch: (input_shape, n_outputs, example batch)
IMAGE = ((1, 8, 8), 10)
VECTOR = ((5,), 3)
SIGNAL = ((1, 40), 10)  # MNIST-1D: one channel of length 40
TOKENS = ((6,), 11)

CASES = {
    "fcn-image": ("fcn", *IMAGE),
    "fcn-vector": ("fcn", *VECTOR),
    "cnn": ("cnn", *IMAGE),
    "cnn-signal": ("cnn", *SIGNAL),
    "fcn-signal": ("fcn", *SIGNAL),
    "resnet-signal": ("resnet", *SIGNAL),
    "resnet-image": ("resnet", *IMAGE),
    "resnet-vector": ("resnet", *VECTOR),
    "transformer": ("transformer", *TOKENS),
}


def _inputs(arch: str, input_shape: tuple[int, ...], n_outputs: int, n: int = 4) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    if arch == "transformer":
        return torch.randint(0, n_outputs, (n, *input_shape), generator=gen)
    return torch.randn((n, *input_shape), generator=gen)


def _expected_shape(arch, input_shape, n_outputs, n=4):
    return (n, input_shape[0], n_outputs) if arch == "transformer" else (n, n_outputs)


@pytest.mark.parametrize("case", list(CASES))
def test_forward_shape_and_describe(case):
    arch, shape, n_out = CASES[case]
    model = models.build(arch, width=8, depth=2, input_shape=shape, n_outputs=n_out, seed=0)
    out = model(_inputs(arch, shape, n_out))
    assert out.shape == _expected_shape(arch, shape, n_out)
    assert torch.isfinite(out).all()
    info = models.describe(model)
    assert info["n_params"] == models.n_params(model) > 0
    assert (info["arch"], info["width"], info["depth"]) == (arch, 8, 2)
    assert ("heads" in info) == (arch == "transformer")


def test_transformer_accepts_shorter_sequences_and_is_causal():
    model = models.build("transformer", 8, 2, (6,), 11, heads=2, seed=0)
    tokens = _inputs("transformer", (6,), 11)
    full = model(tokens)
    assert model(tokens[:, :4]).shape == (4, 4, 11)
    changed = tokens.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 11
    # changing the last token cannot change earlier positions' logits
    assert torch.allclose(model(changed)[:, :-1], full[:, :-1], atol=1e-6)
    with pytest.raises(ValueError, match="exceeds"):
        model(torch.zeros(1, 7, dtype=torch.int64))


@pytest.mark.parametrize("case", list(CASES))
def test_vmap_functional_call_matches_per_model_forward(case):
    arch, shape, n_out = CASES[case]
    nets = [
        models.build(arch, width=8, depth=2, input_shape=shape, n_outputs=n_out, seed=s)
        for s in range(3)
    ]
    params, buffers = stack_module_state(nets)
    x = _inputs(arch, shape, n_out)

    def forward(p, b, x):
        return functional_call(nets[0], (p, b), (x,))

    batched = vmap(forward, in_dims=(0, 0, None))(params, buffers, x)
    for i, net in enumerate(nets):
        assert torch.allclose(batched[i], net(x), atol=1e-5, rtol=1e-4)
    # and a different input batch per model
    xs = torch.stack([_inputs(arch, shape, n_out) for _ in range(3)])
    assert vmap(forward)(params, buffers, xs).shape == (3, *_expected_shape(arch, shape, n_out))


@pytest.mark.parametrize("case", list(CASES))
def test_param_count_grows_with_width_and_depth(case):
    arch, shape, n_out = CASES[case]

    def count(width, depth):
        return models.n_params(models.build(arch, width, depth, shape, n_out, heads=2))

    assert count(4, 1) < count(8, 1) < count(16, 1)
    assert count(8, 1) < count(8, 2) < count(8, 3)


@pytest.mark.parametrize("case", list(CASES))
def test_no_batchnorm_and_no_dropout(case):
    arch, shape, n_out = CASES[case]
    model = models.build(arch, 8, 3, shape, n_out)
    banned = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.modules.dropout._DropoutNd)
    assert not any(isinstance(m, banned) for m in model.modules())


@pytest.mark.parametrize("case", list(CASES))
def test_seed_gives_deterministic_init_without_touching_global_rng(case):
    arch, shape, n_out = CASES[case]
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = models.build(arch, 8, 2, shape, n_out, seed=7)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = models.build(arch, 8, 2, shape, n_out, seed=7)
    c = models.build(arch, 8, 2, shape, n_out, seed=8)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb)
    assert not torch.equal(pa, pc)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("mlp", 8, 2, (2,), 2), {}, "unknown arch"),
        (("fcn", 0, 2, (2,), 2), {}, "width"),
        (("fcn", 8, 0, (2,), 2), {}, "depth"),
        (("resnet", 8, -1, (2,), 2), {}, "depth"),
        (("fcn", 8, 2, (2,), 0), {}, "n_outputs"),
        (("fcn", 8, 2, (), 2), {}, "input_shape"),
        (("cnn", 8, 2, (2,), 2), {}, r"image input \(C, H, W\)"),
        (("transformer", 8, 2, (1, 8, 8), 10), {}, r"input_shape=\(T,\)"),
        (("transformer", 10, 2, (6,), 11), {"heads": 4}, "divisible by heads"),
        (("transformer", 8, 2, (6,), 11), {"heads": 0}, "heads"),
        (("fcn", 8, 2, (2,), 2), {"activation": "swish"}, "unknown activation"),
        (("cnn", 8, 2, (1, 8, 8), 2), {"norm": "batch"}, "norm"),
        (("fcn", 8, 2, (2,), 2), {"dropout": 0.1}, "unknown option"),
    ],
)
def test_bad_arguments_raise_value_error(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.build(*args, **kwargs)


def test_cnn_convolves_signals_in_one_dimension():
    model = models.build("cnn", 8, 2, (1, 40), 10, seed=0)
    assert [type(c).__name__ for c in model.convs] == ["Conv1d", "Conv1d"]
    # 3-tap kernels: (1*3 + 1)*8 + (8*3 + 1)*8 weights and biases, GroupNorm 2*16, head 8*10+10
    assert models.n_params(model) == 32 + 200 + 32 + 90
    assert model(torch.randn(3, 1, 40)).shape == (3, 10)


def test_options_are_recorded_and_change_the_model():
    plain = models.build("cnn", 8, 2, (1, 8, 8), 10, norm="none", activation="gelu")
    normed = models.build("cnn", 8, 2, (1, 8, 8), 10)
    assert models.n_params(plain) < models.n_params(normed)
    assert models.describe(plain)["options"] == {"activation": "gelu", "norm": "none"}
    rebuilt = models.build(**plain.spec.kwargs())
    assert models.n_params(rebuilt) == models.n_params(plain)


def test_describe_any_module():
    info = models.describe(torch.nn.Linear(3, 2))
    assert info["n_params"] == 8 and info["arch"] == "Linear"


@pytest.mark.parametrize(
    ("arch", "dataset", "load_kwargs"),
    [
        ("fcn", "spirals", {"n_train": 64, "n_test": 16}),
        ("cnn", "digits", {"n_train": 64, "n_test": 16}),
        ("cnn", "mnist1d", {"n_train": 64, "n_test": 16}),
        ("fcn", "mnist1d", {"n_train": 64, "n_test": 16}),
        ("resnet", "digits", {"n_train": 64, "n_test": 16}),
        ("resnet", "teacher", {"n_train": 64, "n_test": 16}),
        ("transformer", "modadd", {"p": 7}),
    ],
)
def test_each_arch_trains_on_a_matching_dataset(arch, dataset, load_kwargs):
    ds = data.load(dataset, seed=0, **load_kwargs)
    model = models.build(arch, 16, 2, ds.input_shape, ds.n_outputs, heads=2, seed=0)
    loss_fn = data.task_loss(ds.task)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = loss_fn(model(ds.x_train), ds.y_train)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    error = data.task_error(ds.task)
    if error is not None:
        assert 0.0 <= float(error(model(ds.x_test), ds.y_test)) <= 1.0
