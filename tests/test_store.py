"""Tests for lossbarcode.store: round trips, corruption, crash safety, no pickle, locking."""

import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from lossbarcode import store as store_mod
from lossbarcode.store import CorruptResultError, ResultStore

RUN = "0123abcdef"


@pytest.fixture
def store(tmp_path: Path) -> ResultStore:
    return ResultStore(tmp_path / "results")


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "f64": rng.normal(size=(3, 4)),
        "f32": rng.normal(size=5).astype(np.float32),
        "i64": np.arange(-3, 7, dtype=np.int64),
        "u8": np.array([0, 255], dtype=np.uint8),
        "bool": np.array([True, False, True]),
        "c128": np.array([1 + 2j, -3j]),
        "str": np.array(["a", "bcd"]),
        "scalar": np.array(3.5),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "inf": np.array([np.inf, -np.inf, np.nan]),  # arrays may hold inf/nan, meta may not
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "layer.0.weight": np.ones((2, 2)),
        "file": np.zeros(1),  # a name np.savez would reserve
    }


def _save_default(store: ResultStore, stage: str = "minima") -> None:
    store.save_stage(RUN, stage, {"n": 3}, {"x": np.arange(1000.0)})


# -- round trips -----------------------------------------------------------------------------


def test_round_trip_meta_and_arrays(store: ResultStore) -> None:
    meta = {
        "loss": 0.25,
        "n": 3,
        "ok": True,
        "none": None,
        "name": "mlp",
        "nested": {"widths": [8, 16], "inf_loss": "inf"},
        "unicode": "π",
    }
    arrays = _arrays()
    store.save_stage(RUN, "minima", meta, arrays)
    loaded = store.load_stage(RUN, "minima")
    assert loaded is not None
    got_meta, got = loaded
    assert got_meta == meta
    assert list(got) == list(arrays)
    for name, array in arrays.items():
        assert type(got[name]) is np.ndarray
        assert got[name].dtype == array.dtype and got[name].shape == array.shape
        np.testing.assert_array_equal(got[name], array)


def test_tuples_come_back_as_lists_and_no_arrays_is_empty(store: ResultStore) -> None:
    store.save_stage(RUN, "result", {"widths": (8, 16)})
    assert store.load_stage(RUN, "result") == ({"widths": [8, 16]}, {})
    assert not (store.root / RUN / "result.npz").exists()


def test_resave_replaces_stage_and_stale_npz(store: ResultStore) -> None:
    _save_default(store)
    store.save_stage(RUN, "minima", {"n": 4}, {"y": np.ones(2)})
    meta, arrays = store.load_stage(RUN, "minima")
    assert meta == {"n": 4} and list(arrays) == ["y"]
    store.save_stage(RUN, "minima", {"n": 5})  # no arrays now: the old .npz must go
    assert store.load_stage(RUN, "minima") == ({"n": 5}, {})
    assert sorted(p.name for p in (store.root / RUN).iterdir()) == ["minima.json"]


def test_absent_stage_is_none(store: ResultStore) -> None:
    assert store.load_stage(RUN, "minima") is None
    assert not store.root.exists()  # reading never creates the directory
    _save_default(store)
    assert store.load_stage(RUN, "paths") is None


# -- corruption ------------------------------------------------------------------------------


def test_truncated_npz_is_corrupt(store: ResultStore) -> None:
    _save_default(store)
    npz = store.root / RUN / "minima.npz"
    npz.write_bytes(npz.read_bytes()[:-100])
    with pytest.raises(CorruptResultError, match="minima.npz") as info:
        store.load_stage(RUN, "minima")
    assert "recomputes" in str(info.value) and info.value.path == npz


def test_missing_npz_is_corrupt(store: ResultStore) -> None:
    _save_default(store)
    (store.root / RUN / "minima.npz").unlink()
    with pytest.raises(CorruptResultError, match="missing"):
        store.load_stage(RUN, "minima")


def test_edited_npz_is_corrupt(store: ResultStore) -> None:
    _save_default(store)
    npz = store.root / RUN / "minima.npz"
    data = bytearray(npz.read_bytes())
    data[-200] ^= 1  # a flipped bit in the array data, zip still well-formed
    npz.write_bytes(bytes(data))
    with pytest.raises(CorruptResultError, match="sha256"):
        store.load_stage(RUN, "minima")


@pytest.mark.parametrize(
    "edit",
    [
        lambda r: r.update(version=0),
        lambda r: r["meta"].update(n=4),  # caught by the record's own checksum
        lambda r: r.update(stage="paths"),
        lambda r: r.update(run_id="other"),
        lambda r: r.update(format="something-else"),
        lambda r: r.update(meta=[1, 2]),
        lambda r: r["arrays"].update(names=["x", "y"]),
        lambda r: r["arrays"].update(sha256="0" * 64),
        lambda r: r.update(arrays="x"),
    ],
    ids=["version", "meta-value", "stage", "run_id", "format", "meta", "names", "sha", "arrays"],
)
def test_edited_json_is_corrupt(store: ResultStore, edit) -> None:
    _save_default(store)
    path = store.root / RUN / "minima.json"
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))
    with pytest.raises(CorruptResultError):
        store.load_stage(RUN, "minima")


@pytest.mark.parametrize(
    "content", [b"", b"{not json", b"\xff\xfe\x00", b"[1, 2]", b'{"meta": NaN}', b"null"]
)
def test_garbage_json_is_corrupt(store: ResultStore, content: bytes) -> None:
    _save_default(store)
    (store.root / RUN / "minima.json").write_bytes(content)
    assert store.has_stage(RUN, "minima")  # present, but not trusted
    with pytest.raises(CorruptResultError, match="minima.json"):
        store.load_stage(RUN, "minima")


class _Bomb:
    """Unpickling this would run code; the store must never do it."""

    def __reduce__(self):
        return (Path("pwned").touch, ())


def test_pickle_bomb_is_refused_not_executed(store: ResultStore, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    _save_default(store)
    npz = store.root / RUN / "minima.npz"
    bomb = np.array([_Bomb(), 1], dtype=object)
    np.savez(npz, x=bomb, allow_pickle=True)
    # First with the stale hash, then with the hash forged to match: both refused.
    with pytest.raises(CorruptResultError):
        store.load_stage(RUN, "minima")
    path = store.root / RUN / "minima.json"
    record = json.loads(path.read_text())
    record["arrays"]["sha256"] = hashlib.sha256(npz.read_bytes()).hexdigest()
    record["sha256"] = store_mod._record_digest(record)  # forge the record checksum too
    path.write_text(json.dumps(record))
    with pytest.raises(CorruptResultError, match="unreadable arrays"):
        store.load_stage(RUN, "minima")
    assert not (tmp_path / "pwned").exists()


def test_npz_with_non_array_member_is_corrupt(store: ResultStore) -> None:
    _save_default(store)
    npz = store.root / RUN / "minima.npz"
    with zipfile.ZipFile(npz, "w") as zf:
        zf.writestr("x.npy", b"not an npy file")
    path = store.root / RUN / "minima.json"
    record = json.loads(path.read_text())
    record["arrays"]["sha256"] = hashlib.sha256(npz.read_bytes()).hexdigest()
    record["sha256"] = store_mod._record_digest(record)  # forge the record checksum too
    path.write_text(json.dumps(record))
    with pytest.raises(CorruptResultError):
        store.load_stage(RUN, "minima")


# -- invalid input ---------------------------------------------------------------------------


def test_object_arrays_are_refused(store: ResultStore) -> None:
    with pytest.raises(ValueError, match="'bad'.*object"):
        store.save_stage(RUN, "minima", {}, {"bad": np.array([{}, 1], dtype=object)})
    structured = np.zeros(2, dtype=[("a", "f8"), ("b", "O")])
    with pytest.raises(ValueError, match="object"):
        store.save_stage(RUN, "minima", {}, {"s": structured})
    assert not store.has_stage(RUN, "minima")


@pytest.mark.parametrize(
    ("meta", "where"),
    [
        ({"loss": float("nan")}, "loss"),
        ({"a": {"b": [1.0, float("inf")]}}, "'b'\\]\\[1\\]"),
        ({"x": -float("inf")}, "'x'"),
        ({"n": np.int64(3)}, "int64"),
        ({"arr": np.zeros(2)}, "ndarray"),
        ({"s": {1, 2}}, "set"),
        ({"k": {1: "a"}}, "non-string key"),
    ],
)
def test_non_json_meta_is_refused(store: ResultStore, meta, where: str) -> None:
    with pytest.raises(ValueError, match=where):
        store.save_stage(RUN, "minima", meta)
    assert not store.has_stage(RUN, "minima")


@pytest.mark.parametrize("bad", ["../x", "", "a/b", "..", ".hidden", "x" * 65, "a b", None, 3])
def test_bad_names_are_refused(store: ResultStore, bad) -> None:
    with pytest.raises(ValueError, match="invalid"):
        store.save_stage(bad, "minima", {})
    with pytest.raises(ValueError, match="invalid"):
        store.save_stage(RUN, bad, {})
    for call in (store.load_stage, store.has_stage, store.drop_stage):
        with pytest.raises(ValueError):
            call(bad, "minima")
    for call in (store.exists, store.delete, store.stages):
        with pytest.raises(ValueError):
            call(bad)
    with pytest.raises(ValueError), store.lock(bad):
        pass
    assert not store.root.exists() or store.list() == []


def test_bad_array_names_are_refused(store: ResultStore) -> None:
    for bad in ["../x", "", ".x", "a/b"]:
        with pytest.raises(ValueError, match="array name"):
            store.save_stage(RUN, "minima", {}, {bad: np.zeros(1)})


# -- crash safety ----------------------------------------------------------------------------


def _crash_on(monkeypatch, suffix: str) -> None:
    real = os.replace

    def replace(src, dst, **dir_fds):
        if str(dst).endswith(suffix):
            raise OSError("simulated crash")
        return real(src, dst, **dir_fds)

    monkeypatch.setattr(store_mod.os, "replace", replace)


@pytest.mark.parametrize("suffix", [".json", ".npz"])
@pytest.mark.parametrize("had_old_version", [False, True])
def test_crash_mid_write_leaves_no_stage(
    store: ResultStore, monkeypatch, suffix: str, had_old_version: bool
) -> None:
    if had_old_version:
        store.save_stage(RUN, "minima", {"old": 1}, {"x": np.zeros(5)})
    store.save_stage(RUN, "result", {"done": True})
    with monkeypatch.context() as m:
        _crash_on(m, suffix)
        with pytest.raises(OSError, match="simulated crash"):
            store.save_stage(RUN, "minima", {"new": 2}, {"x": np.ones(50)})
    assert store.load_stage(RUN, "minima") is None  # absent: recomputed, never half-read
    assert not store.has_stage(RUN, "minima")
    assert store.stages(RUN) == ["result"]
    assert list((store.root / RUN).glob("*.tmp")) == []
    assert list((store.root / RUN).glob(".*")) == []
    store.save_stage(RUN, "minima", {"new": 2}, {"x": np.ones(50)})  # and it recovers
    assert store.load_stage(RUN, "minima")[0] == {"new": 2}


def test_crash_while_writing_arrays_cleans_temp(store: ResultStore, monkeypatch) -> None:
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(store_mod.np.lib.format, "write_array", boom)
    with pytest.raises(RuntimeError):
        store.save_stage(RUN, "minima", {}, {"x": np.zeros(3)})
    assert store.stages(RUN) == [] and store.list() == []
    assert list((store.root / RUN).iterdir()) == []


# -- listing, deleting, root -----------------------------------------------------------------


def test_list_exists_delete_drop(store: ResultStore) -> None:
    assert store.list() == [] and not store.exists(RUN) and store.stages(RUN) == []
    store.delete(RUN)  # absent: no error
    store.drop_stage(RUN, "minima")
    _save_default(store, "minima")
    store.save_stage(RUN, "paths", {"k": 1})
    store.save_stage("b-run", "minima", {})
    (store.root / "empty_run").mkdir()  # a folder with no stage is not a run
    (store.root / "stray.json").write_text("{}")
    assert store.list() == sorted([RUN, "b-run"])
    assert store.stages(RUN) == ["minima", "paths"]
    assert store.has_stage(RUN, "paths") and not store.exists(RUN)
    store.save_stage(RUN, "result", {"to_score": 0.5})
    assert store.exists(RUN)

    store.drop_stage(RUN, "minima")
    assert store.stages(RUN) == ["paths", "result"]
    assert not (store.root / RUN / "minima.npz").exists()

    with store.lock(RUN):  # a lock file does not make a run, and delete works while locked
        store.delete(RUN)
    assert store.list() == ["b-run"] and not store.exists(RUN)
    assert sorted(p.name for p in store.root.iterdir()) == [
        ".locks",
        "b-run",
        "empty_run",
        "stray.json",
    ]


def test_root_from_env_var_and_default(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LOSSBARCODE_RESULTS", str(tmp_path / "env"))
    s = ResultStore()
    assert s.root == tmp_path / "env"
    assert not s.root.exists()  # created lazily
    s.save_stage(RUN, "result", {})
    assert (tmp_path / "env" / RUN / "result.json").is_file()
    assert ResultStore(tmp_path / "explicit").root == tmp_path / "explicit"  # explicit wins

    monkeypatch.delenv("LOSSBARCODE_RESULTS")
    monkeypatch.chdir(tmp_path)
    default = ResultStore()
    assert default.root == tmp_path / "results" and default.root.is_absolute()


# -- locking ---------------------------------------------------------------------------------

_WORKER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from lossbarcode.store import ResultStore
    root, log, ready = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    store = ResultStore(root)
    ready.touch()
    for _ in range(2):
        with store.lock("shared"):
            with open(log, "a") as f:
                f.write(f"start {os.getpid()} {time.time_ns()}\\n")
            time.sleep(0.15)
            with open(log, "a") as f:
                f.write(f"end {os.getpid()} {time.time_ns()}\\n")
    """
)


def test_lock_excludes_other_processes(store: ResultStore, tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    readies = [tmp_path / f"ready{i}" for i in range(2)]
    # The workers import this checkout's lossbarcode, installed or not.
    repo = str(Path(__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")])),
    }
    with store.lock("shared"):
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _WORKER, str(store.root), str(log), str(ready)], env=env
            )
            for ready in readies
        ]
        deadline = time.monotonic() + 20
        while not all(r.exists() for r in readies):  # both workers are about to contend
            assert time.monotonic() < deadline, "workers did not start"
            assert all(p.poll() is None for p in procs), "a worker died"
            time.sleep(0.02)
        time.sleep(0.2)
        assert not log.exists()  # nobody got in while we held it
        released = time.time_ns()
    assert [p.wait(timeout=30) for p in procs] == [0, 0]

    events = [line.split() for line in log.read_text().splitlines()]
    assert len(events) == 8
    # Each worker writes only while holding the lock, so a correct lock gives strictly
    # alternating start/end pairs of the same pid, and non-overlapping time intervals.
    intervals = []
    for (kind1, pid1, t1), (kind2, pid2, t2) in zip(events[::2], events[1::2], strict=True):
        assert (kind1, kind2) == ("start", "end") and pid1 == pid2
        intervals.append((int(t1), int(t2)))
    assert intervals[0][0] >= released
    for (_, end), (start, _) in zip(intervals, intervals[1:], strict=False):
        assert end <= start
    assert len({pid for _, pid, _ in events}) == 2


def test_lock_timeout_raises_timeout_error(store: ResultStore) -> None:
    with store.lock(RUN):
        t0 = time.monotonic()
        with pytest.raises(TimeoutError, match=RUN), store.lock(RUN, timeout=0.2):
            pass
        assert 0.15 < time.monotonic() - t0 < 5
        with store.lock("other-run", timeout=0):  # locks are per run id
            pass
    with store.lock(RUN, timeout=0):  # released on exit
        pass
    with pytest.raises(ValueError, match="timeout"), store.lock(RUN, timeout=-1):
        pass


def test_lock_is_released_on_exception(store: ResultStore) -> None:
    with pytest.raises(KeyError), store.lock(RUN):
        raise KeyError("boom")
    with store.lock(RUN, timeout=0):
        pass


def test_lock_excludes_threads_in_one_process(store: ResultStore) -> None:
    # Dashboard sessions are threads of one process: they must exclude each other too.
    inside = 0
    overlaps = []
    computed = []

    def session() -> None:
        nonlocal inside
        with store.lock(RUN):
            inside += 1
            overlaps.append(inside)
            if not store.exists(RUN):  # check-compute-save: only the first one computes
                time.sleep(0.1)
                computed.append(threading.get_ident())
                store.save_stage(RUN, "result", {"v": 1})
            inside -= 1

    threads = [threading.Thread(target=session) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert overlaps == [1, 1, 1, 1]
    assert len(computed) == 1
    assert store.load_stage(RUN, "result") == ({"v": 1}, {})


def test_a_stage_records_its_inputs_and_views_of_a_stage_go_with_it(tmp_path):
    from lossbarcode.views import drop_views_of

    store = ResultStore(tmp_path)
    store.save_stage("r", "minima", {})
    store.save_stage("r", "paths", {})
    store.save_stage("r", "view-a", {}, {"x": np.zeros(2)}, inputs=["minima"])
    store.save_stage("r", "view-b", {}, inputs=["minima", "paths"])
    store.save_stage("r", "old-cache", {})  # recorded no inputs: made from anything
    assert store.stage_inputs("r", "view-b") == ("minima", "paths")
    assert store.stage_inputs("r", "old-cache") is None
    assert store.stage_inputs("r", "absent") is None
    with pytest.raises(ValueError, match="input stage"):
        store.save_stage("r", "bad", {}, inputs=["../minima"])
    pipeline = {"minima": (), "paths": ("minima",)}
    drop_views_of(store, "r", "paths", pipeline)
    assert store.stages("r") == ["minima", "paths", "view-a"]
    drop_views_of(store, "r", "minima", pipeline)
    assert store.stages("r") == ["minima"]


# -- links and special files (issue 19): nothing outside a results folder can be hurt ---------


def _tree(folder: Path) -> dict[str, bytes]:
    """Every regular file under ``folder`` (links not followed), by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.is_symlink()}


def _other_run(tmp_path: Path) -> Path:
    """A real run folder outside the results folder, holding two stages."""
    other = ResultStore(tmp_path / "elsewhere")
    _save_default(other)
    other.save_stage(RUN, "result", {"done": True})
    return other.root / RUN


def _unsafe_everywhere(store: ResultStore) -> None:
    """Every read and write of RUN refuses the folder; nothing is dropped."""
    with pytest.raises(store_mod.UnsafeResultError, match="symbolic link"):
        store.load_stage(RUN, "minima")
    with pytest.raises(store_mod.UnsafeResultError):
        store.save_stage(RUN, "minima", {"n": 4}, {"x": np.zeros(2)})
    with pytest.raises(store_mod.UnsafeResultError):
        store.drop_stage(RUN, "minima")
    with pytest.raises(store_mod.UnsafeResultError):
        store.delete(RUN)
    with store.lock(RUN):
        with pytest.raises(store_mod.UnsafeResultError):
            store.load_or_drop(RUN, "minima")  # unsafe: never dropped, even with the lock
        with pytest.raises(store_mod.UnsafeResultError):
            store.clean_temp(RUN)
    with pytest.warns(RuntimeWarning, match="symbolic link"):
        assert store.read(RUN, "minima") is None


def test_a_run_folder_that_is_a_link_is_never_read_written_or_deleted(store, tmp_path) -> None:
    target = _other_run(tmp_path)
    (target / f".minima.json.{'0' * 16}.tmp").write_bytes(b"a temp file of the other run")
    before = _tree(target)
    store.root.mkdir(parents=True)
    (store.root / RUN).symlink_to(target, target_is_directory=True)
    _unsafe_everywhere(store)
    assert RUN in store.list()  # listed, so `list` can say it is unusable
    assert _tree(target) == before
    assert (store.root / RUN).is_symlink()


def test_a_stage_file_that_is_a_link_is_never_read_or_written_through(store, tmp_path) -> None:
    target = _other_run(tmp_path)
    before = _tree(target)
    _save_default(store)
    (store.root / RUN / "result.json").symlink_to(target / "result.json")
    _unsafe_everywhere(store)
    assert _tree(target) == before
    assert (store.root / RUN / "result.json").is_symlink()


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _socket(path: Path) -> None:
    import socket

    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()


def _zero_device(path: Path) -> None:
    try:
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # what /dev/zero is
    except PermissionError:
        pytest.skip("making a device node needs root")


@pytest.mark.parametrize("make", [_fifo, _socket, _zero_device, Path.mkdir,
                                  lambda p: p.symlink_to("/dev/zero")],
                         ids=["fifo", "socket", "zero-device", "directory", "link-to-dev-zero"])
def test_a_special_file_as_a_stage_is_refused_at_once(store, make) -> None:
    _save_default(store)
    store.save_stage(RUN, "paths", {"n": 1})
    make(store.root / RUN / "result.json")
    found: list = []

    def load() -> None:
        try:
            store.load_stage(RUN, "paths")
        except store_mod.UnsafeResultError as err:
            found.append(err)

    reader = threading.Thread(target=load, daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "reading a special file blocked"
    assert found and "result.json" in str(found[0])
    with pytest.raises(store_mod.UnsafeResultError):
        store.save_stage(RUN, "result", {"done": True})
    assert not (store.root / RUN / "result.json").is_file()  # left as it was: not replaced


def test_reads_are_bounded(store, monkeypatch) -> None:
    _save_default(store)
    monkeypatch.setattr(store_mod, "MAX_JSON_BYTES", 100)
    with pytest.raises(CorruptResultError, match="more than the limit of 100"):
        store.load_stage(RUN, "minima")
    monkeypatch.setattr(store_mod, "MAX_JSON_BYTES", 10**6)
    monkeypatch.setattr(store_mod, "MAX_ARRAYS_BYTES", 1000)
    with pytest.raises(CorruptResultError, match="more than the limit of 1,000"):
        store.load_stage(RUN, "minima")
    with pytest.raises(store_mod.FileRefusedError, match="character device"):
        store_mod.read_regular_file("/dev/zero", 10**9)


def test_deeply_nested_json_is_refused_per_file(store) -> None:
    _save_default(store)
    (store.root / RUN / "minima.json").write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(CorruptResultError, match="nested more than"):
        store.load_stage(RUN, "minima")
    record = {"a": 1}
    for _ in range(store_mod.MAX_JSON_DEPTH + 1):
        record = {"a": record}
    with pytest.raises(ValueError, match="nested"):
        store_mod.parse_json(json.dumps(record).encode())


def test_compressed_arrays_are_refused(store) -> None:
    _save_default(store)
    npz = store.root / RUN / "minima.npz"
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=np.zeros(10**6))  # 8 MB that pack into a few kB
    npz.write_bytes(buffer.getvalue())
    _edit_record(store, "minima", lambda r: r["arrays"].update(
        sha256=hashlib.sha256(npz.read_bytes()).hexdigest()))
    with pytest.raises(CorruptResultError, match="compressed"):
        store.load_stage(RUN, "minima")


def _edit_record(store: ResultStore, stage: str, edit) -> None:
    path = store.root / RUN / f"{stage}.json"
    record = json.loads(path.read_text())
    edit(record)
    record["sha256"] = store_mod._record_digest(record)
    path.write_text(json.dumps(record))


def test_outputs_never_replace_a_special_file(tmp_path) -> None:
    write = store_mod.atomic_write_bytes
    os.mkfifo(tmp_path / "fifo")
    _socket(tmp_path / "sock")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dangling").symlink_to(tmp_path / "nothing")
    for name, says in (("fifo", "nobody reads"), ("sock", "socket"), ("dir", "directory"),
                       ("dangling", "missing file")):
        kind = os.lstat(tmp_path / name).st_mode
        with pytest.raises(ValueError, match=says):
            write(tmp_path / name, b"data")
        assert os.lstat(tmp_path / name).st_mode == kind  # still what it was
    assert not (tmp_path / "nothing").exists()
    write("/dev/null", b"into the device, by opening it")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    # A FIFO with a reader is written into.
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append((tmp_path / "fifo").read_bytes()))
    reader.start()
    time.sleep(0.2)
    write(tmp_path / "fifo", b"streamed")
    reader.join(10)
    assert got == [b"streamed"]
    # A link to a regular file: its target is replaced, the link stays.
    (tmp_path / "real.json").write_bytes(b"old")
    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    write(tmp_path / "link.json", b"new")
    assert (tmp_path / "link.json").is_symlink() and (tmp_path / "real.json").read_bytes() == b"new"


def test_a_block_device_output_is_refused(tmp_path) -> None:
    try:
        os.mknod(tmp_path / "blk", 0o600 | stat.S_IFBLK, os.makedev(7, 250))
    except PermissionError:
        pytest.skip("making a device node needs root")
    with pytest.raises(ValueError, match="block device"):
        store_mod.atomic_write_bytes(tmp_path / "blk", b"x")
    assert stat.S_ISBLK(os.lstat(tmp_path / "blk").st_mode)


def test_locks_never_go_through_a_link(store, tmp_path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (store.root / ".locks").mkdir(parents=True)
    (store.root / ".locks" / f"{RUN}.lock").symlink_to(victim)
    with pytest.raises(ValueError, match="symbolic link"):
        with store.lock(RUN):
            pass
    (store.root / ".locks" / f"{RUN}.lock").unlink()
    os.mkfifo(store.root / ".locks" / f"{RUN}.lock")
    with pytest.raises(ValueError, match="FIFO"):
        with store.lock(RUN):
            pass
    other = ResultStore(tmp_path / "other")
    other.root.mkdir()
    (other.root / ".locks").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(ValueError, match="symbolic link"):
        with other.lock(RUN):
            pass
    assert victim.read_text() == "precious"
    assert not list(tmp_path.glob("*.lock"))


def test_copy_results_copies_regular_files_only_and_bounded(store, tmp_path) -> None:
    _save_default(store)
    store.save_stage(RUN, "result", {"done": True})
    for name, make in (("a" * 16, _fifo), ("b" * 16, lambda p: p.symlink_to("/dev/zero"))):
        (store.root / name).mkdir()
        make(store.root / name / "result.json")
    (store.root / ("c" * 16)).symlink_to(store.root / RUN, target_is_directory=True)
    skipped = store_mod.copy_results(store.root, tmp_path / "copy")
    copy = ResultStore(tmp_path / "copy")
    np.testing.assert_array_equal(copy.load_stage(RUN, "minima")[1]["x"], np.arange(1000.0))
    assert copy.load_stage(RUN, "result")[0] == {"done": True}
    assert len(skipped) == 3 and not (tmp_path / "copy" / ("c" * 16)).exists()
    assert not any((tmp_path / "copy" / n / "result.json").exists() for n in ("a" * 16, "b" * 16))
    small = store_mod.copy_results(store.root, tmp_path / "small", limit=5000)
    assert any("more than the limit" in s for s in small)
    assert sum(p.stat().st_size for p in (tmp_path / "small").rglob("*") if p.is_file()) <= 5000
