"""Tests for lossbarcode.store: round trips, corruption, crash safety, no pickle, locking."""

import hashlib
import json
import os
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
