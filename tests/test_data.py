"""Tests for lossbarcode.data: embedded sets, local text, torchvision formats (fake files)."""

import gzip
import json
import pickle
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_data import fake_debian_fashion, write_mnist

from lossbarcode import data, datafiles

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
        "mnist1d",
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


@pytest.mark.parametrize(
    ("name", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")]
)
def test_mnist_family_from_idx_files(tmp_path, name, folder):
    write_mnist(tmp_path, folder, compress=name == "fashion_mnist")
    ds = data.load(name, root=tmp_path, n_test=4, seed=2)
    assert ds.input_shape == (1, 28, 28) and ds.n_outputs == 10
    assert (ds.n_train, ds.n_test) == (12, 4)
    assert abs(float(ds.x_train.mean())) < 1e-4
    _assert_consistent(ds)


def test_mnist_gz_files_are_read_in_place_and_bad_idx_files_are_refused(tmp_path):
    write_mnist(tmp_path, "MNIST", compress=True)
    raw = tmp_path / "MNIST" / "raw"
    before = sorted(p.name for p in raw.iterdir())
    assert data.load("mnist", root=tmp_path).n_train == 12
    assert sorted(p.name for p in raw.iterdir()) == before  # nothing unpacked or written
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz could not be read"):
        data.load("mnist", root=tmp_path)
    with gzip.open(raw / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"\x00\x00\x08\x01\x00\x00\x00\x09" + bytes(5))  # says 9 labels, holds 5
    with pytest.raises(ValueError, match="not the \\(9,\\) its header says"):
        data.load("mnist", root=tmp_path)


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
        write_mnist(Path(self.root), "MNIST")

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


# -------------------------------------------------- Fashion-MNIST from Debian's package (fake)


@pytest.fixture
def debian(tmp_path, monkeypatch) -> Path:
    """A fake copy of Debian's dataset-fashion-mnist and an empty ``tmp_path / "data"``."""
    return fake_debian_fashion(tmp_path, monkeypatch)


def test_fashion_mnist_falls_back_to_the_system_copy_and_says_where(debian, tmp_path):
    root = tmp_path / "data"
    assert datafiles.missing_files("fashion_mnist", root) is None
    assert datafiles.system_copy("fashion_mnist", root) == debian
    ds = data.load("fashion_mnist", root=root)
    assert (ds.n_train, ds.n_test, ds.input_shape) == (12, 6, (1, 28, 28))
    source = datafiles.data_source("fashion_mnist", root)
    assert ds.meta["source"] == source
    assert str(debian) in source and "dataset-fashion-mnist" in source
    assert str(root / "FashionMNIST" / "raw") in source  # and where it looked first
    # The same files in the data folder are the same data: the same fingerprint (run id).
    from_system = datafiles.fingerprint("fashion_mnist", root)
    assert from_system.startswith("sha256:")
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in debian.iterdir():
        (raw / f.name).write_bytes(f.read_bytes())
    assert datafiles.system_copy("fashion_mnist", root) is None  # the data folder comes first
    assert datafiles.fingerprint("fashion_mnist", root) == from_system
    assert datafiles.data_source("fashion_mnist", root) == str(raw)
    assert _equal(data.load("fashion_mnist", root=root), ds)
    # Other files there are other data, and they are what is read.
    write_mnist(root, "FashionMNIST", compress=True, seed=1)
    assert datafiles.fingerprint("fashion_mnist", root) != from_system
    assert not _equal(data.load("fashion_mnist", root=root), ds)


def test_a_partial_data_folder_is_reported_not_mixed_with_the_system_copy(debian, tmp_path):
    root = tmp_path / "data"
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    name = "train-labels-idx1-ubyte.gz"
    (raw / name).write_bytes((debian / name).read_bytes())
    assert datafiles.system_copy("fashion_mnist", root) is None
    message = datafiles.missing_files("fashion_mnist", root)
    assert "t10k-images-idx3-ubyte" in message and str(raw) in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert datafiles.fingerprint("fashion_mnist", root) == datafiles.MISSING
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.load("fashion_mnist", root=root)


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setitem(datafiles.SYSTEM_COPIES, "fashion_mnist",
                        (tmp_path / "not-installed", "dataset-fashion-mnist"))
    message = datafiles.missing_files("fashion_mnist", tmp_path)
    assert "FashionMNIST/raw" in message and "train-images-idx3-ubyte" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert str(tmp_path / "not-installed") in message
    assert datafiles.data_source("fashion_mnist", tmp_path) is None
    assert datafiles.fingerprint("fashion_mnist", tmp_path) == datafiles.MISSING
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.load("fashion_mnist", root=tmp_path)
    # MNIST has no system copy: its message names only the files.
    assert "apt-get" not in datafiles.missing_files("mnist", tmp_path)


# ------------------------------------------------------------------ MNIST-1D, generated offline


@pytest.fixture
def fresh_mnist1d(monkeypatch):
    """No MNIST-1D generated yet in this process (the memo is restored afterwards)."""
    monkeypatch.setattr(datafiles, "_MNIST1D", {})


def test_mnist1d_is_generated_offline_by_make_dataset(fresh_mnist1d, monkeypatch):
    import random

    import mnist1d.data
    import requests

    def no_network(*args, **kwargs):
        raise AssertionError("MNIST-1D must be generated, never downloaded")

    monkeypatch.setattr(mnist1d.data, "get_dataset", no_network)
    monkeypatch.setattr(requests, "get", no_network)
    np.random.seed(123)  # noqa: NPY002 - the package's global generator, checked below
    random.seed(123)
    expected_np, expected_py = np.random.rand(), random.random()  # noqa: NPY002
    np.random.seed(123)  # noqa: NPY002
    random.seed(123)
    ds = data.load("mnist1d")
    # The package seeds the global generators; the loader leaves them as it found them.
    assert (np.random.rand(), random.random()) == (expected_np, expected_py)  # noqa: NPY002
    assert ds.input_shape == (1, 40) and ds.n_outputs == 10 and ds.task == "classification"
    assert (ds.n_train, ds.n_test) == (4000, 1000)
    assert ds.x_train.dtype == torch.float32
    assert sorted(ds.y_train.unique().tolist()) == list(range(10))
    assert ds.y_train.bincount().min() > 300  # about 400 of each class
    _assert_consistent(ds)
    made = mnist1d.data.make_dataset(mnist1d.data.get_dataset_args())
    assert np.array_equal(ds.x_train[:, 0].numpy(), made["x"].astype(np.float32))
    assert np.array_equal(ds.y_test.numpy(), made["y_test"])
    assert ds.meta["generator"]["seed"] == 42 and "url" not in ds.meta["generator"]
    assert "make_dataset" in ds.meta["source"] and ds.meta["version"] in ds.meta["source"]


def test_mnist1d_subsets_are_seeded_and_bounded():
    a = data.load("mnist1d", n_train=300, n_test=100, seed=3)
    assert (a.n_train, a.n_test) == (300, 100)
    assert _equal(a, data.load("mnist1d", n_train=300, n_test=100, seed=3))
    assert not _equal(a, data.load("mnist1d", n_train=300, n_test=100, seed=4))
    with pytest.raises(ValueError, match="larger than the 4000"):
        data.load("mnist1d", n_train=4001)


def test_mnist1d_fingerprint_is_its_content(monkeypatch):
    import mnist1d.data

    fp = datafiles.fingerprint("mnist1d", None)
    assert fp.startswith("sha256:") and fp == datafiles.fingerprint("mnist1d", "elsewhere")
    assert datafiles.missing_files("mnist1d", None) is None
    make = mnist1d.data.make_dataset

    def other_data(args):  # e.g. another package version making other signals
        made = make(args)
        return {**made, "x": made["x"] + 1e-3}

    monkeypatch.setattr(mnist1d.data, "make_dataset", other_data)
    monkeypatch.setattr(datafiles, "_MNIST1D", {})
    assert datafiles.fingerprint("mnist1d", None) not in (fp, datafiles.MISSING)

    monkeypatch.setattr(mnist1d.data, "make_dataset", lambda args: {**make(args), "y": [1]})
    monkeypatch.setattr(datafiles, "_MNIST1D", {})
    with pytest.raises(ValueError, match="not MNIST-1D's"):
        data.load("mnist1d")
    assert datafiles.fingerprint("mnist1d", None) == datafiles.MISSING


def test_missing_mnist1d_package_says_how_to_get_it(monkeypatch):
    monkeypatch.setattr(datafiles, "MNIST1D_PACKAGE", "mnist1d_is_not_installed")
    message = datafiles.missing_files("mnist1d", None)
    assert "pip install mnist1d" in message
    assert datafiles.data_source("mnist1d", None) is None
    assert datafiles.fingerprint("mnist1d", None) == datafiles.MISSING
    with pytest.raises(FileNotFoundError, match="pip install mnist1d"):
        data.load("mnist1d")


# ------------------------------------------------------------ real Fashion-MNIST (Debian's copy)

DEBIAN_FASHION = datafiles.SYSTEM_COPIES["fashion_mnist"][0]
needs_debian_fashion = pytest.mark.skipif(
    not all((DEBIAN_FASHION / f"{f}.gz").is_file() for f in datafiles.MNIST_FILES),
    reason=f"Debian's dataset-fashion-mnist is not installed in {DEBIAN_FASHION} (apt-get "
           "install dataset-fashion-mnist; the README's test command installs it)")


@needs_debian_fashion
@pytest.mark.slow
def test_a_small_real_fashion_mnist_experiment(tmp_path):
    """2,000 real Fashion-MNIST training images from Debian's copy, fcn 16x1, K = 3: the data
    is Fashion-MNIST (its published pixel mean and std, its first labels), and the run learns,
    certifies its minima and records where its data came from."""
    from lossbarcode.experiment import ExperimentConfig, run_experiment
    from lossbarcode.store import ResultStore

    root = tmp_path / "data"  # holds nothing: Debian's copy is read
    labels = data._read_idx(DEBIAN_FASHION / "train-labels-idx1-ubyte.gz")
    assert labels.shape == (60000,) and labels[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    ds = data.load("fashion_mnist", root=root, n_train=2000, n_test=500)
    # Fashion-MNIST's well-known statistics (MNIST's are 0.1307 / 0.3081).
    assert ds.meta["mean"][0] == pytest.approx(0.2860, abs=2e-4)
    assert ds.meta["std"][0] == pytest.approx(0.3530, abs=2e-4)
    assert ds.input_shape == (1, 28, 28) and sorted(ds.y_train.unique().tolist()) == list(
        range(10))

    config = ExperimentConfig(dataset="fashion_mnist", data_root=str(root), n_train=2000,
                              n_test=500, width=16, depth=1, k=3, steps=300, images=2,
                              eval_points=2, path_max_steps=200, restarts=1, eval_subset=500,
                              device="cpu")
    result = run_experiment(config, ResultStore(tmp_path / "results"))
    assert result.data_fingerprint == datafiles.fingerprint("fashion_mnist", root)
    assert result.data_fingerprint.startswith("sha256:")
    assert "dataset-fashion-mnist" in result.data_source and str(DEBIAN_FASHION) in (
        result.data_source)
    assert result.minima_certified.all()
    assert (result.train_loss < 0.1 * np.log(10)).all()  # learned: far below chance
    assert (result.test_error < 0.35).all()  # chance is 0.9
    finite = np.isfinite(result.barcode.deaths)
    assert len(result.barcode) == 3 and finite.sum() == 2  # one unbounded bar
    assert np.all(result.barcode.deaths[finite] >= result.barcode.births[finite])
    assert np.isfinite(result.score) and result.score >= 0
