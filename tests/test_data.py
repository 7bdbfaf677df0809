"""Tests for lossbarcode.data: embedded sets, local text, torchvision formats (fake files)."""

import gzip
import json
import pickle
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from lossbarcode import data

EMBEDDED = {
    # name: (input_shape, x dtype, task, n_outputs)
    "digits": ((1, 8, 8), torch.float32, "classification", 10),
    "spirals": ((2,), torch.float32, "classification", 2),
    "blobs": ((2,), torch.float32, "classification", 4),
    "teacher": ((8,), torch.float32, "regression", 1),
    "modadd": ((3,), torch.int64, "sequence", 24),
}


def _assert_consistent(ds: data.Dataset) -> None:
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        assert tuple(x.shape[1:]) == ds.input_shape
        assert x.shape[0] == y.shape[0] >= 1
        if ds.task == "classification":
            assert y.dtype == torch.int64 and y.ndim == 1
            assert 0 <= int(y.min()) and int(y.max()) < ds.n_outputs
        elif ds.task == "regression":
            assert y.dtype == torch.float32 and y.shape[1] == ds.n_outputs
        else:
            assert x.dtype == y.dtype == torch.int64 and y.shape == x.shape
            scored = y[y != data.IGNORE_INDEX]
            assert len(scored) > 0 and int(scored.max()) < ds.n_outputs
            assert int(x.min()) >= 0 and int(x.max()) < ds.n_outputs
        if x.is_floating_point():
            assert torch.isfinite(x).all()


def _equal(a: data.Dataset, b: data.Dataset) -> bool:
    return all(
        torch.equal(getattr(a, k), getattr(b, k))
        for k in ("x_train", "y_train", "x_test", "y_test")
    )


# ------------------------------------------------------------------------------ embedded sets


@pytest.mark.parametrize("name", list(EMBEDDED))
def test_embedded_dataset_shapes_dtypes_task(name):
    shape, dtype, task, n_outputs = EMBEDDED[name]
    ds = data.load(name)
    assert ds.name == name
    assert ds.input_shape == shape
    assert ds.x_train.dtype == dtype
    assert ds.task == task
    assert ds.n_outputs == n_outputs
    assert ds.n_train == ds.x_train.shape[0] and ds.n_test == ds.x_test.shape[0]
    _assert_consistent(ds)


def test_datasets_lists_every_name():
    assert set(data.DATASETS) == set(EMBEDDED) | {
        "text",
        "mnist",
        "fashion_mnist",
        "cifar10",
        "cifar100",
        "svhn",
    }


def test_digits_is_the_default_and_standardised_with_train_statistics():
    ds = data.load()
    assert ds.name == "digits"
    assert ds.n_train + ds.n_test == 1797
    assert abs(float(ds.x_train.mean())) < 1e-4
    assert abs(float(ds.x_train.std()) - 1.0) < 1e-2


def test_modadd_targets_only_at_last_position():
    ds = data.load("modadd", p=7)
    x = torch.cat([ds.x_train, ds.x_test])
    y = torch.cat([ds.y_train, ds.y_test])
    assert len(x) == 49 and ds.n_outputs == 8
    assert (x[:, 2] == 7).all()
    assert (y[:, :2] == data.IGNORE_INDEX).all()
    assert torch.equal(y[:, 2], (x[:, 0] + x[:, 1]) % 7)
    # every pair exactly once across the split
    assert len({(int(a), int(b)) for a, b in x[:, :2]}) == 49


def test_teacher_options_change_dimensions():
    ds = data.load("teacher", dim=3, out_dim=2, n_train=10, n_test=5)
    assert ds.input_shape == (3,) and ds.n_outputs == 2
    assert ds.y_train.shape == (10, 2)


@pytest.mark.parametrize("name", list(EMBEDDED))
def test_same_seed_same_tensors_other_seed_different(name):
    a = data.load(name, seed=3, n_train=20, n_test=10)
    b = data.load(name, seed=3, n_train=20, n_test=10)
    c = data.load(name, seed=4, n_train=20, n_test=10)
    assert _equal(a, b)
    assert not _equal(a, c)


def test_subsets_have_requested_sizes_and_come_from_the_full_split():
    full = data.load("digits", seed=1)
    sub = data.load("digits", seed=1, n_train=50, n_test=7)
    assert (sub.n_train, sub.n_test) == (50, 7)
    rows = {tuple(r.tolist()) for r in full.x_train.flatten(1)}
    assert all(tuple(r.tolist()) in rows for r in sub.x_train.flatten(1))


def test_synthetic_test_set_does_not_depend_on_n_train():
    a = data.load("spirals", n_train=10, n_test=30)
    b = data.load("spirals", n_train=40, n_test=30)
    assert torch.equal(a.x_test, b.x_test)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "nope"}, "available"),
        ({"name": "digits", "n_train": 10_000}, "larger than"),
        ({"name": "digits", "n_test": 0}, "positive"),
        ({"name": "spirals", "n_train": -3}, "positive"),
        ({"name": "modadd", "p": 5, "n_test": 100}, "larger than"),
        ({"name": "digits", "wobble": 1}, "unknown option"),
        ({"name": "blobs", "n_classes": 1}, "n_classes"),
        ({"name": "digits", "seed": -1}, "seed"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.load(**kwargs)


def test_to_moves_every_tensor_and_returns_new_dataset():
    ds = data.load("blobs", n_train=8, n_test=4)
    moved = ds.to("cpu")
    assert moved is not ds and _equal(moved, ds)
    assert moved.meta == ds.meta and moved.task == ds.task


# ---------------------------------------------------------------------------------- local text

TEXT = "the quick brown fox jumps over the lazy dog. " * 20


def test_text_from_txt_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    ds = data.load("text", root=path, seq_len=16, n_train=40, n_test=10)
    assert ds.task == "sequence" and ds.input_shape == (16,)
    assert ds.x_train.shape == (40, 16) and ds.y_test.shape == (10, 16)
    assert ds.meta["vocab"] == "".join(sorted(set(TEXT)))
    assert ds.n_outputs == len(set(TEXT))
    # y is x shifted by one character
    assert torch.equal(ds.x_train[:, 1:], ds.y_train[:, :-1])
    _assert_consistent(ds)
    again = data.load("text", root=str(path), seq_len=16, n_train=40, n_test=10)
    assert _equal(ds, again)


def test_text_from_jsonl_and_gz_folder(tmp_path):
    lines = [json.dumps({"text": TEXT[:300]}), "", json.dumps({"content": TEXT[300:]})]
    (tmp_path / "a.jsonl").write_text("\n".join(lines), encoding="utf-8")
    ds = data.load("text", root=tmp_path / "a.jsonl", seq_len=8)
    assert ds.input_shape == (8,) and ds.n_train >= 1
    _assert_consistent(ds)

    folder = tmp_path / "shard"
    (folder / "sub").mkdir(parents=True)
    (folder / "one.txt").write_text(TEXT[:400], encoding="utf-8")
    with gzip.open(folder / "sub" / "two.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps({"text": "ZZZ" + TEXT[400:]}) + "\n")
    (folder / "ignored.csv").write_text("#,@,!", encoding="utf-8")
    ds = data.load("text", root=folder, seq_len=8, n_train=5, n_test=5)
    assert "Z" in ds.meta["vocab"] and "@" not in ds.meta["vocab"]
    _assert_consistent(ds)


def test_text_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load("text", root=tmp_path / "missing.txt")
    with pytest.raises(FileNotFoundError, match="no text files"):
        data.load("text", root=tmp_path)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="empty"):
        data.load("text", root=tmp_path / "empty.txt")
    (tmp_path / "short.txt").write_text("abcdef")
    with pytest.raises(ValueError, match="seq_len"):
        data.load("text", root=tmp_path / "short.txt")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        data.load("text", root=tmp_path / "bad.jsonl")
    (tmp_path / "long.txt").write_text(TEXT)
    with pytest.raises(ValueError, match="n_train"):
        data.load("text", root=tmp_path / "long.txt", seq_len=8, n_train=10_000)
    with pytest.raises(ValueError, match="root"):
        data.load("text")


# ------------------------------------------------------------- torchvision formats, fake files


def _write_idx(path: Path, array: np.ndarray) -> None:
    """IDX ("ubyte") format: magic (0, 0, 0x08 = uint8, ndim), big-endian dims, raw bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += b"".join(struct.pack(">I", s) for s in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _write_mnist(root: Path, folder: str, compress: bool = False) -> None:
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("t10k", 6)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            path = raw / f"{split}-{kind}-ubyte"
            _write_idx(path, array)
            if compress:
                with gzip.open(f"{path}.gz", "wb") as f:
                    f.write(path.read_bytes())
                path.unlink()


@pytest.mark.parametrize(
    ("name", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")]
)
def test_mnist_family_from_idx_files(tmp_path, name, folder):
    _write_mnist(tmp_path, folder, compress=name == "fashion_mnist")
    ds = data.load(name, root=tmp_path, n_test=4, seed=2)
    assert ds.input_shape == (1, 28, 28) and ds.n_outputs == 10
    assert (ds.n_train, ds.n_test) == (12, 4)
    assert abs(float(ds.x_train.mean())) < 1e-4
    _assert_consistent(ds)


def test_mnist_missing_files_message(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        data.load("mnist", root=tmp_path)
    message = str(err.value)
    assert "train-images-idx3-ubyte" in message and "MNIST/raw" in message
    assert "download=True" in message


def test_mnist_download_true_goes_through_torchvision(tmp_path, monkeypatch):
    from torchvision import datasets

    calls = []

    def fake_download(self):
        calls.append(self.root)
        _write_mnist(Path(self.root), "MNIST")

    monkeypatch.setattr(datasets.MNIST, "download", fake_download)
    ds = data.load("mnist", root=tmp_path, download=True)
    assert calls and ds.n_train == 12


def _write_cifar(root: Path, name: str) -> None:
    rng = np.random.default_rng(1)
    if name == "cifar10":
        folder, files, key, n_classes = (
            root / "cifar-10-batches-py",
            [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"],
            "labels",
            10,
        )
    else:
        folder, files, key, n_classes = (
            root / "cifar-100-python",
            ["train", "test"],
            "fine_labels",
            100,
        )
    folder.mkdir(parents=True)
    for file in files:
        n = 4
        batch = {
            "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            key: [int(v) for v in rng.integers(0, n_classes, size=n)],
        }
        if name == "cifar100":  # the real files come from Python 2: keys may arrive as bytes
            batch = {k.encode(): v for k, v in batch.items()}
        with open(folder / file, "wb") as f:
            # old and new pickle protocols store arrays differently; cover both
            pickle.dump(batch, f, protocol=2 if name == "cifar100" else 5)


@pytest.mark.parametrize(
    ("name", "n_classes", "n_train"), [("cifar10", 10, 20), ("cifar100", 100, 4)]
)
def test_cifar_from_pickled_batches(tmp_path, name, n_classes, n_train):
    _write_cifar(tmp_path, name)
    ds = data.load(name, root=tmp_path)
    assert ds.input_shape == (3, 32, 32) and ds.n_outputs == n_classes
    assert (ds.n_train, ds.n_test) == (n_train, 4)
    means = ds.x_train.mean(dim=(0, 2, 3))
    assert torch.allclose(means, torch.zeros(3), atol=1e-4)
    _assert_consistent(ds)


def test_cifar_missing_and_malicious_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        data.load("cifar10", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        data.load("cifar100", root=tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    _write_cifar(tmp_path, "cifar100")
    with open(tmp_path / "cifar-100-python" / "test", "wb") as f:
        pickle.dump({"data": Evil()}, f)
    with pytest.raises(ValueError, match="refusing"):
        data.load("cifar100", root=tmp_path)


def test_cifar_download_failure_is_reported(tmp_path, monkeypatch):
    from torchvision import datasets

    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(datasets.CIFAR10, "__init__", offline)
    with pytest.raises(FileNotFoundError, match="download=True"):
        data.load("cifar10", root=tmp_path, download=True)


def test_svhn_from_mat_files(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(2)
    for split, n in (("train", 7), ("test", 3)):
        x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        y = np.array([[10], [1], [2], [3], [4], [5], [6]][:n], dtype=np.uint8)
        savemat(tmp_path / f"{split}_32x32.mat", {"X": x, "y": y})
    ds = data.load("svhn", root=tmp_path)
    assert ds.input_shape == (3, 32, 32) and (ds.n_train, ds.n_test) == (7, 3)
    assert ds.y_train.tolist() == [0, 1, 2, 3, 4, 5, 6]
    _assert_consistent(ds)


def test_svhn_missing_files_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_32x32.mat"):
        data.load("svhn", root=tmp_path)


def test_default_root_is_data_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="data"):
        data.load("svhn")
    assert data.DEFAULT_ROOT == "./data"
