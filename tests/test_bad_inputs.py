"""Bad inputs and faults, table-driven: through the CLI (a subprocess per case) and the API.

Every CLI error case must exit 2 with exactly one line on stderr that names the problem, no
traceback, and leave every finished stage of the results folder as it was.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from lossbarcode import store as store_mod
from lossbarcode import topology
from lossbarcode.experiment import (
    ExperimentConfig,
    Result,
    _valid_barcode,
    all_scores,
    load_result,
    run_experiment,
)
from lossbarcode.minima import Minima
from lossbarcode.paths import Paths
from lossbarcode.store import CorruptResultError, NewerFormatError, ResultStore

ROOT = Path(__file__).resolve().parents[1]
TINY = ExperimentConfig(n_train=100, n_test=50, width=4, depth=1, k=3, steps=20, batch_size=32,
                        images=1, path_steps=4, eval_points=1, device="cpu")
TINY_FLAGS = ["--n-train", "100", "--n-test", "50", "--width", "4", "--depth", "1",
              "--minima", "3", "--steps", "20", "--batch-size", "32", "--images", "1",
              "--path-steps", "4", "--eval-points", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> tuple[Path, str]:
    """A results folder holding one finished tiny run."""
    root = tmp_path_factory.mktemp("template") / "results"
    result = run_experiment(TINY, ResultStore(root))
    return root, result.run_id


# --------------------------------------------------------------------------- helpers


def _edit_stage(root: Path, run_id: str, stage: str, edit: Callable[[dict], None],
                forge: bool = True) -> None:
    """Edit a stage's JSON record; with ``forge``, recompute its checksum (a careful forger)."""
    path = root / run_id / f"{stage}.json"
    record = json.loads(path.read_text())
    edit(record)
    if forge:
        record["sha256"] = store_mod._record_digest(record)
    path.write_text(json.dumps(record))


def _edit_arrays(root: Path, run_id: str, stage: str, edit: Callable[[dict], None]) -> None:
    """Rewrite a stage's arrays and fix both checksums: consistent hashes, bad content."""
    store = ResultStore(root)
    meta, arrays = store.load_stage(run_id, stage)
    arrays = dict(arrays)
    edit(arrays)
    store.save_stage(run_id, stage, meta, arrays)


def _finished(root: Path) -> dict[tuple[str, str], bytes]:
    """Bytes of every stage that verifies (JSON + .npz), by (run, stage)."""
    out: dict[tuple[str, str], bytes] = {}
    if not root.is_dir():
        return out
    store = ResultStore(root)
    for run_id in store.list():
        for stage in store.stages(run_id):
            try:
                if store.load_stage(run_id, stage) is None:
                    continue
            except ValueError:
                continue
            npz = root / run_id / f"{stage}.npz"
            out[(run_id, stage)] = (root / run_id / f"{stage}.json").read_bytes() + (
                npz.read_bytes() if npz.exists() else b"")
    return out


def _readonly_prefix(folder: Path) -> list[str]:
    """A command prefix that runs the rest with ``folder`` mounted read-only (root only)."""
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind {folder} {folder} && "
                            f"mount -o remount,bind,ro {folder}"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("needs unshare + mount (root) to make a read-only folder")
    return ["unshare", "-m", "sh", "-c", f'mount --bind "{folder}" "{folder}" && mount -o '
            f'remount,bind,ro "{folder}" && exec "$@"', "sh"]


def _full_disk(limit: int = 20_000) -> Callable[[], None]:
    def preexec() -> None:
        # A file-size limit makes writes fail with EFBIG, as a full disk fails them (ENOSPC).
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


def _cli(argv: list[str], cwd: Path, results: Path, prefix: list[str] | None = None,
         preexec: Callable[[], None] | None = None, timeout: float = 120
         ) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LOSSBARCODE_RESULTS": str(results)}
    env.pop("LOSSBARCODE_DEBUG", None)
    return subprocess.run([*(prefix or []), sys.executable, "-m", "lossbarcode", *argv],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=preexec, check=False)


# --------------------------------------------------------------------------- CLI error cases


@dataclass
class Case:
    """One bad CLI input: ``setup(tmp, results, run_id)`` prepares files and returns argv."""

    name: str
    setup: Callable[[Path, Path, str], list[str]]
    says: str  # substring of the one stderr line
    finished: bool = True  # start from the folder with a finished run
    readonly: bool = False  # run with the results folder mounted read-only
    preexec: Callable[[], None] | None = None
    check: Callable[[Path, Path, str], None] | None = None  # extra assertions afterwards
    extra: dict = field(default_factory=dict)


def _config_file(name: str, content: bytes | str) -> Callable[[Path, Path, str], list[str]]:
    def setup(tmp: Path, results: Path, run_id: str) -> list[str]:
        path = tmp / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return ["run", "--config", str(path)]
    return setup


def _result_edit(edit: Callable[[dict], None], forge: bool = True, command: str = "show"
                 ) -> Callable[[Path, Path, str], list[str]]:
    def setup(tmp: Path, results: Path, run_id: str) -> list[str]:
        _edit_stage(results, run_id, "result", lambda r: edit(r["meta"]), forge)
        return [command, run_id]
    return setup


def _set(path: str, value) -> Callable[[dict], None]:
    def edit(meta: dict) -> None:
        *parents, last = path.split(".")
        target = meta
        for key in parents:
            target = target[key]
        target[last] = value
    return edit


def _newer(tmp: Path, results: Path, run_id: str) -> list[str]:
    for stage in ("minima", "paths", "result"):
        _edit_stage(results, run_id, stage, lambda r: r.update(version=2))
    return ["show", run_id]


def _newer_run(tmp: Path, results: Path, run_id: str) -> list[str]:
    _newer(tmp, results, run_id)
    return ["run", *TINY_FLAGS]


def _sweep_append(content: str) -> Callable[[Path, Path, str], list[str]]:
    def setup(tmp: Path, results: Path, run_id: str) -> list[str]:
        (tmp / "sweep.json").write_text(content)
        return ["sweep", "--append", "--output", str(tmp / "sweep.json"), "-q", *TINY_FLAGS]
    return setup


def _unchanged(name: str, content: str) -> Callable[[Path, Path, str], None]:
    def check(tmp: Path, results: Path, run_id: str) -> None:
        assert (tmp / name).read_text() == content
    return check


def _export_over_existing(tmp: Path, results: Path, run_id: str) -> list[str]:
    (tmp / "old.json").write_text("old export\n")
    return ["export", run_id, "--output", str(tmp / "old.json")]


def _locked(tmp: Path, results: Path, run_id: str) -> list[str]:
    # Held by this test process (see test_cli_bad_input) for the new run's id.
    return ["run", "-q", "--lock-timeout", "0.5", *TINY_FLAGS, "--seed", "5"]


def _stage_write_fails(tmp: Path, results: Path, run_id: str) -> list[str]:
    return ["run", "-q", *TINY_FLAGS, "--seed", "3"]



# Links and special files in and around a results folder (issue 19).


def _snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every entry under ``folder`` (links not followed): its mode and, for a file, bytes."""
    out = {}
    for p in sorted(folder.rglob("*")):
        mode = os.lstat(p).st_mode
        out[str(p.relative_to(folder))] = (mode, p.read_bytes() if stat.S_ISREG(mode) else b"")
    return out


def _linked_run_folder(tmp: Path, results: Path, run_id: str) -> list[str]:
    """The run's folder is a link to a copy of it elsewhere (another run's stages)."""
    shutil.move(results / run_id, tmp / "elsewhere")
    (results / run_id).symlink_to(tmp / "elsewhere", target_is_directory=True)
    (tmp / "before").write_text(json.dumps({k: [v[0], v[1].hex()] for k, v in
                                            _snapshot(tmp / "elsewhere").items()}))
    return ["run", "-q", *TINY_FLAGS]


def _linked_stage_file(tmp: Path, results: Path, run_id: str) -> list[str]:
    (tmp / "elsewhere").mkdir()
    shutil.move(results / run_id / "paths.json", tmp / "elsewhere" / "paths.json")
    (results / run_id / "paths.json").symlink_to(tmp / "elsewhere" / "paths.json")
    (tmp / "before").write_text(json.dumps({k: [v[0], v[1].hex()] for k, v in
                                            _snapshot(tmp / "elsewhere").items()}))
    return ["run", "-q", *TINY_FLAGS]


def _elsewhere_untouched(tmp: Path, results: Path, run_id: str) -> None:
    before = json.loads((tmp / "before").read_text())
    assert {k: [v[0], v[1].hex()] for k, v in _snapshot(tmp / "elsewhere").items()} == before
    assert any(p.is_symlink() for p in [results / run_id, *(results / run_id).iterdir()])


def _stage_as(stage: str, make: Callable[[Path], None], command: str = "show"
              ) -> Callable[[Path, Path, str], list[str]]:
    def setup(tmp: Path, results: Path, run_id: str) -> list[str]:
        path = results / run_id / f"{stage}.json"
        path.unlink()
        make(path)
        return [command, run_id] if command != "run" else ["run", "-q", *TINY_FLAGS]
    return setup


def _mknod(kind: int, major: int, minor: int) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        try:
            os.mknod(path, 0o600 | kind, os.makedev(major, minor))
        except PermissionError:
            pytest.skip("making a device node needs root")
    return make


def _deep(path: Path) -> None:
    path.write_text("[" * 200_000 + "]" * 200_000)


def _output_to(make: Callable[[Path], None], command: str) -> Callable[[Path, Path, str],
                                                                      list[str]]:
    def setup(tmp: Path, results: Path, run_id: str) -> list[str]:
        make(tmp / "out")
        (tmp / "mode").write_text(str(os.lstat(tmp / "out").st_mode))
        if command == "export":
            return ["export", run_id, "--output", str(tmp / "out")]
        return ["sweep", "-q", *TINY_FLAGS, "--output", str(tmp / "out")]
    return setup


def _output_kept(tmp: Path, results: Path, run_id: str) -> None:
    assert os.lstat(tmp / "out").st_mode == int((tmp / "mode").read_text())


def _bind_socket(path: Path) -> None:
    import socket

    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()


def _forged(edit: Callable[[dict], None], command: str = "show"
            ) -> Callable[[Path, Path, str], list[str]]:
    """A result edited and its checksum forged (a careful forger)."""
    return _result_edit(edit, forge=True, command=command)


def _nan_barriers(meta: dict) -> None:
    """Every barrier NaN, and the barcode and scores made to match: all bars essential."""
    meta["path_barriers"] = [None] * len(meta["path_barriers"])
    k = len(meta["minima"])
    meta["barriers"] = [[meta["barriers"][i][j] if i == j else None for j in range(k)]
                        for i in range(k)]
    for key in ("barcode", "barcode_all"):
        bars = meta[key]
        n = len(bars["births"])
        bars.update(deaths=["inf"] * n, saddles=[-1] * n, merged_into=[-1] * n,
                    saddle_edges=[[-1, -1]] * n, merged_into_minimum=[-1] * n)
    for key in ("to_score", "to_score_all"):
        meta[key] = dict.fromkeys(meta[key], 0.0)


CASES = [
    # links and special files (issue 19, section 1): nothing outside is touched
    Case("run-folder-is-a-link", _linked_run_folder, "symbolic link",
         check=_elsewhere_untouched),
    Case("stage-file-is-a-link", _linked_stage_file, "symbolic link",
         check=_elsewhere_untouched),
    Case("result-fifo-show", _stage_as("result", os.mkfifo), "FIFO"),
    Case("result-fifo-run", _stage_as("result", os.mkfifo, "run"), "FIFO"),
    Case("result-dev-zero-link", _stage_as("result", lambda p: p.symlink_to("/dev/zero")),
         "symbolic link"),
    Case("result-zero-device", _stage_as("result", _mknod(stat.S_IFCHR, 1, 5)),
         "character device"),
    Case("result-directory-show", _stage_as("result", Path.mkdir), "directory"),
    Case("result-directory-run", _stage_as("result", Path.mkdir, "run"), "directory"),
    Case("minima-npz-fifo", lambda t, r, i: ((r / i / "minima.npz").unlink(), os.mkfifo(
        r / i / "minima.npz"), ["run", "-q", *TINY_FLAGS])[-1], "FIFO"),
    Case("result-deep-json-show", _stage_as("result", _deep), "nested more than"),
    Case("export-to-block-device", _output_to(_mknod(stat.S_IFBLK, 7, 250), "export"),
         "block device", check=_output_kept),
    Case("sweep-output-block-device", _output_to(_mknod(stat.S_IFBLK, 7, 250), "sweep"),
         "block device", check=_output_kept),
    Case("export-to-socket", _output_to(_bind_socket, "export"), "socket", check=_output_kept),
    Case("sweep-output-socket", _output_to(_bind_socket, "sweep"), "socket",
         check=_output_kept),
    Case("export-to-fifo-nobody-reads", _output_to(os.mkfifo, "export"), "nobody reads",
         check=_output_kept),
    Case("sweep-output-dangling-link", _output_to(lambda p: p.symlink_to(p.parent / "none"),
                                                  "sweep"), "missing file", check=_output_kept),
    Case("config-fifo", lambda t, r, i: (os.mkfifo(t / "c.json"), ["run", "--config",
                                                                   str(t / "c.json")])[-1],
         "FIFO"),
    Case("config-dev-zero", lambda t, r, i: ((t / "c.json").symlink_to("/dev/zero"), [
        "run", "--config", str(t / "c.json")])[-1], "character device"),
    Case("config-deep-json", _config_file("c.json", "[" * 200_000 + "]" * 200_000), "nested"),
    Case("config-deep-toml", _config_file("c.toml", "a = " + "[" * 200_000 + "]" * 200_000),
         "c.toml"),
    Case("sweep-file-fifo", lambda t, r, i: (os.mkfifo(t / "s.json"), [
        "sweep", "--append", "--output", str(t / "s.json"), "-q", *TINY_FLAGS])[-1],
         "nobody reads"),
    # messages (issue 19, section 3)
    Case("seed-overflow", lambda t, r, i: ["run", "-q", "--seed", "9" * 25], "--seed must be"),
    Case("bench-repeat-0", lambda t, r, i: ["bench", "topology", "--repeat", "0"],
         "--repeat"),
    Case("sweep-seeds-overflow", lambda t, r, i: ["sweep", "-q", "--seeds", "0," + "9" * 25,
                                                  *TINY_FLAGS], "--seeds: 9999"),
    Case("sweep-widths-zero", lambda t, r, i: ["sweep", "-q", "--widths", "4,0", *TINY_FLAGS],
         "--widths: 0 is not a valid width"),
    # every numeric knob has an upper bound (issue 19, section 3)
    Case("polish-steps-huge", lambda t, r, i: ["run", "-q", "--polish-steps", "1000000000"],
         "--polish-steps must be at most 100000"),
    Case("path-steps-huge", lambda t, r, i: ["run", "-q", "--path-steps", "1000000000000"],
         "--path-steps must be at most 1000000"),
    Case("lr-huge", lambda t, r, i: ["run", "-q", "--lr", "1e300"], "--lr must be a positive "
         "number of at most 100"),
    Case("config-images-huge", _config_file("c.json", '{"images": 100000}'),
         "images must be at most 256"),
    Case("beyond-a-day", lambda t, r, i: ["run", "-q", "--minima", "1024", "--steps",
                                          "10000000"], "pass --yes"),
    Case("sweep-beyond-a-day", lambda t, r, i: ["sweep", "-q", "--seeds", "0,1", "--minima",
                                                "1024", "--steps", "10000000"], "pass --yes"),
    # data that passes its checksum but is wrong (issue 19, section 2)
    Case("forged-to-score", _forged(lambda m: m["to_score"].update(l2=99.0)),
         "not the TO-score"),
    Case("forged-nan-barriers", _forged(_nan_barriers), "path_barriers"),
    Case("forged-barcode-death", _forged(lambda m: m["barcode"].update(
        deaths=["inf"] + [d + 1.0 for d in m["barcode"]["deaths"][1:]])), "barcode"),
    Case("forged-barrier-matrix", _forged(lambda m: m["barriers"][0].__setitem__(
        1, (m["barriers"][0][1] or 0) + 5.0)), "barriers"),
    Case("forged-certified", _forged(lambda m: m["minima"][1].update(
        certified=not m["minima"][1]["certified"])), "certified"),
    Case("forged-test-error", _forged(lambda m: m["minima"][0].update(test_error=7.0)),
         "test_error"),
    Case("forged-barrier-below-endpoint", _forged(lambda m: m.update(
        path_barriers=[-1.0] * len(m["path_barriers"]))), "path_barriers"),
    Case("forged-to-score-export", _forged(lambda m: m["to_score"].update(l2=99.0),
                                           command="export"), "not the TO-score"),
    # results that must not be trusted or deleted (items 2, 5, 7)
    Case("newer-version-show", _newer, "made by a newer lossbarcode"),
    Case("newer-version-run", _newer_run, "made by a newer lossbarcode"),
    Case("merged-into-overflow", _result_edit(_set("barcode.merged_into", [10**30, 0, 0])),
         "merged_into"),
    Case("score-norm-bogus", _result_edit(_set("config.score_norm", "bogus")), "score_norm"),
    Case("to-score-empty", _result_edit(_set("to_score", {})), "to_score"),
    Case("to-score-empty-export", _result_edit(_set("to_score", {}), command="export"),
         "to_score"),
    Case("minima-not-a-list", _result_edit(_set("minima", 5)), "minima"),
    Case("pairs-out-of-range", _result_edit(_set("pairs", [[0, 7]])), "pairs"),
    Case("edited-unforged", _result_edit(_set("config.width", 16), forge=False), "checksum"),
    Case("edited-forged", _result_edit(_set("config.width", 16)), "hash to the run id"),
    Case("run-id-swapped", _result_edit(_set("run_id", "ffffffffffffffff")), "holds run"),
    Case("no-such-run", lambda t, r, i: ["show", "0000000000000000"], "no finished run"),
    Case("bad-run-id", lambda t, r, i: ["show", "../etc"], "invalid run id"),
    # device and allocator (item 9)
    Case("device-cuda", lambda t, r, i: ["run", "-q", *TINY_FLAGS, "--seed", "7", "--device",
                                         "cuda"], "cuda"),
    Case("device-cuda-99", lambda t, r, i: ["run", "-q", *TINY_FLAGS, "--seed", "7", "--device",
                                            "cuda:99"], "cuda:99"),
    Case("device-gpu", lambda t, r, i: ["run", "--device", "gpu"], "device must be"),
    Case("huge-model", lambda t, r, i: ["run", "-q", "--width", "60000", "--depth", "50"],
         "cannot fit in memory"),
    Case("huge-k", lambda t, r, i: ["run", "-q", "--minima", "1024", "--width", "4096"],
         "cannot fit in memory"),
    # the filesystem (items 4, 10, 11)
    Case("results-is-a-file", lambda t, r, i: ["list", "--results", "/etc/hostname"],
         "is a file"),
    Case("export-to-directory", lambda t, r, i: ["export", i, "--output", str(t)],
         "is a directory"),
    Case("export-to-proc", lambda t, r, i: ["export", i, "--output", "/proc/version"],
         "/proc/version"),
    Case("export-no-folder", lambda t, r, i: ["export", i, "--output", str(t / "no" / "x")],
         "does not exist"),
    Case("export-full-disk", _export_over_existing, "old.json", preexec=_full_disk(500),
         check=_unchanged("old.json", "old export\n")),
    Case("stage-write-full-disk", _stage_write_fails, "could not read or write",
         preexec=_full_disk()),
    Case("stage-write-full-disk-names-the-file", _stage_write_fails, ".npz: File too large",
         preexec=_full_disk()),
    Case("readonly-new-run", lambda t, r, i: ["run", "-q", *TINY_FLAGS, "--seed", "4"],
         "not writable", readonly=True),
    Case("export-readonly", lambda t, r, i: ["export", i, "--output", str(r / "x.json")],
         "Read-only", readonly=True),
    # config files (item 12)
    Case("config-list", _config_file("c.json", "[1, 2, 3]"), "c.json"),
    Case("config-number", _config_file("c.json", "42"), "must hold an object"),
    Case("config-null", _config_file("c.json", "null"), "must hold an object"),
    Case("config-device-int", _config_file("c.json", '{"device": 5}'), "'device'"),
    Case("config-heads-str", _config_file("c.json", '{"heads": "4"}'), "'heads'"),
    Case("config-data-root-int", _config_file("c.json", '{"data_root": 5}'), "'data_root'"),
    Case("config-width-bool", _config_file("c.json", '{"width": true}'), "'width'"),
    Case("config-lr-str", _config_file("c.toml", 'lr = "fast"'), "'lr'"),
    Case("config-unknown-key", _config_file("c.json", '{"widht": 3}'), "widht"),
    Case("config-binary", _config_file("c.json", b"\xff\xfe\x00\x01binary"), "not UTF-8"),
    Case("config-bad-json", _config_file("c.json", "{width: 3"), "not valid json"),
    Case("config-bad-toml", _config_file("c.toml", "width = = 3"), "not valid toml"),
    Case("config-yaml", _config_file("c.yaml", "width: 3\n"), "use JSON (.json) or TOML"),
    Case("config-directory", lambda t, r, i: ["run", "--config", str(t)], "is a directory"),
    Case("config-directory-json", lambda t, r, i: (t / "d.json").mkdir() or [
        "run", "--config", str(t / "d.json")], "is a directory"),
    Case("config-missing", lambda t, r, i: ["run", "--config", str(t / "none.json")],
         "does not exist"),
    # sweep files (item 13)
    Case("append-list", _sweep_append("[1, 2]"), "not a lossbarcode sweep file",
         check=_unchanged("sweep.json", "[1, 2]")),
    Case("append-foo", _sweep_append('{"foo": 1}'), "not a lossbarcode sweep file"),
    Case("append-no-run-id", _sweep_append('{"records": [{"width": 4}]}'),
         "not a lossbarcode sweep file"),
    Case("append-not-json", _sweep_append("{oops"), "not a sweep JSON file"),
    # waiting (items 15, 16)
    Case("ray-unreachable", lambda t, r, i: [
        "sweep", "-q", "--executor", "ray", "--ray-address", "127.0.0.1:1", "--ray-timeout",
        "3", *TINY_FLAGS, "--seed", "9"], "could not connect to the ray cluster at 127.0.0.1:1"),
    Case("lock-held", _locked, "locked by pid"),
    # flags
    Case("flag-not-int", lambda t, r, i: ["run", "--width", "abc"], "invalid int value"),
    Case("flag-k-1", lambda t, r, i: ["run", "--minima", "1"], "--minima must be"),
    Case("flag-lr-negative", lambda t, r, i: ["run", "--lr", "-1"], "lr must be"),
    Case("flag-lock-timeout", lambda t, r, i: ["run", "--lock-timeout", "-1"], "lock-timeout"),
    Case("flag-widths", lambda t, r, i: ["sweep", "--widths", "4,x"], "comma list"),
    Case("slurm-flags-without-submitit", lambda t, r, i: [
        "sweep", "-q", "--slurm-gpus", "1", *TINY_FLAGS], "need --executor submitit"),
    Case("reproduce-archs", lambda t, r, i: ["reproduce", "--archs", "mlp", "--report-only"],
         "--archs: choose from"),
    Case("transformer-digits", lambda t, r, i: ["run", "--arch", "transformer"], "sequence"),
    Case("transformer-mnist1d", lambda t, r, i: ["run", "--arch", "transformer", "--dataset",
                                                 "mnist1d"], "sequence"),
    Case("mnist1d-too-many", lambda t, r, i: ["run", "-q", "--dataset", "mnist1d", "--n-train",
                                              "4001", *TINY_FLAGS[2:]],
         "n_train=4001 is larger than the 4000 examples available in 'mnist1d'"),
    Case("text-missing", lambda t, r, i: ["run", "-q", "--dataset", "text", "--arch",
                                          "transformer", "--data-root", str(t / "no.txt")],
         "does not exist"),
    Case("mnist-missing", lambda t, r, i: ["run", "-q", "--dataset", "mnist", "--data-root",
                                           str(t)], "not found"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_cli_bad_input(case: Case, template, tmp_path: Path) -> None:
    source, run_id = template
    results = tmp_path / "results"
    if case.finished:
        shutil.copytree(source, results)
    argv = case.setup(tmp_path, results, run_id)
    before = _finished(results)
    prefix = _readonly_prefix(results) if case.readonly else None
    holder = None
    if case.name == "lock-held":
        config = TINY.replace(seed=5)
        holder = ResultStore(results).lock(config.run_id)
        holder.__enter__()
    try:
        done = _cli(argv, tmp_path, results, prefix=prefix, preexec=case.preexec)
    finally:
        if holder is not None:
            holder.__exit__(None, None, None)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr
    assert len(lines) == 1, done.stderr
    assert case.says.lower() in lines[0].lower(), lines[0]
    after = _finished(results)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing finished lost
    if case.check is not None:
        case.check(tmp_path, results, run_id)


def test_case_count() -> None:
    # Reported in the closing note of issue 9: CLI cases here + API cases below.
    assert len(CASES) >= 50 and len(API_CASES) >= 40


# --------------------------------------------------------------------------- CLI: reads work


def test_read_only_folder_serves_a_finished_run(template, tmp_path: Path) -> None:
    source, run_id = template
    results = tmp_path / "results"
    shutil.copytree(source, results)
    before = _finished(results)
    prefix = _readonly_prefix(results)
    for argv in (["run", *TINY_FLAGS], ["show", run_id], ["list"], ["export", run_id,
                                                                   "--format", "csv"]):
        done = _cli(argv, tmp_path, results, prefix=prefix)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
    assert _finished(results) == before


def test_list_reports_bad_runs_and_keeps_listing_the_rest(template, tmp_path: Path) -> None:
    source, run_id = template
    results = tmp_path / "results"
    shutil.copytree(source, results)
    for name, edit in (("a" * 16, _set("barcode.merged_into", [10**30, 0, 0])),
                       ("b" * 16, _set("to_score", {}))):
        shutil.copytree(results / run_id, results / name)
        _edit_stage(results, name, "result", lambda r, n=name, e=edit: (
            r.update(run_id=n), r["meta"].update(run_id=n), e(r["meta"])))
    shutil.copytree(results / run_id, results / ("c" * 16))
    _edit_stage(results, "c" * 16, "result", lambda r: r.update(version=2, run_id="c" * 16))
    before = _finished(results)
    done = _cli(["list"], tmp_path, results)
    assert done.returncode == 0 and "Traceback" not in done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()[1:]}
    assert " done " in rows[run_id]
    assert "unusable" in rows["a" * 16] and "unusable" in rows["b" * 16]
    assert "newer lossbarcode" in rows["c" * 16]
    assert _finished(results) == before  # list deleted nothing


def test_ray_sweep_of_cached_runs_needs_no_cluster(template, tmp_path: Path) -> None:
    source, _ = template
    results = tmp_path / "results"
    shutil.copytree(source, results)
    start = time.perf_counter()
    done = _cli(["sweep", "-q", "--executor", "ray", "--ray-address", "127.0.0.1:1",
                 "--ray-timeout", "60", *TINY_FLAGS], tmp_path, results)
    assert done.returncode == 0, done.stderr
    assert time.perf_counter() - start < 50  # never waited for the unreachable cluster


# --------------------------------------------------------------------------- API error cases


def _barcode_dict(**changes) -> dict:
    base = {"births": [0.0, 1.0, 2.0], "deaths": ["inf", 3.0, 4.0], "minima": [0, 1, 2],
            "saddles": [-1, 5, 6], "merged_into": [-1, 0, 0]}
    return {**base, **changes}


def _result_json(template, edit: Callable[[dict], None]) -> dict:
    source, run_id = template
    data = copy.deepcopy(ResultStore(source).load_stage(run_id, "result")[0])
    edit(data)
    return data


def _minima_arrays(template, edit: Callable[[dict], None]) -> dict:
    source, run_id = template
    arrays = dict(ResultStore(source).load_stage(run_id, "minima")[1])
    edit(arrays)
    return arrays


def _paths_arrays(template, edit: Callable[[dict], None]) -> dict:
    source, run_id = template
    arrays = dict(ResultStore(source).load_stage(run_id, "paths")[1])
    edit(arrays)
    return arrays


API_CASES = [
    # Barcode.from_dict (item 14): always ValueError
    ("barcode-overflow", lambda t: topology.Barcode.from_dict(
        _barcode_dict(merged_into=[10**30, 0, 0])), "merged_into"),
    ("barcode-negative-minimum", lambda t: topology.Barcode.from_dict(
        _barcode_dict(minima=[-3, 1, 2])), "minima"),
    ("barcode-float-index", lambda t: topology.Barcode.from_dict(
        _barcode_dict(merged_into=[-1, 0.5, 0])), "merged_into"),
    ("barcode-bool-index", lambda t: topology.Barcode.from_dict(
        _barcode_dict(saddles=[True, 5, 6])), "saddles"),
    ("barcode-cycle", lambda t: topology.Barcode.from_dict(
        _barcode_dict(deaths=[2.0, 3.0, 4.0], merged_into=[1, 0, 0])), "cycle"),
    ("barcode-self-loop", lambda t: topology.Barcode.from_dict(
        _barcode_dict(merged_into=[-1, 1, 0])), "cycle"),
    ("barcode-not-a-list", lambda t: topology.Barcode.from_dict(_barcode_dict(births=5)),
     "births"),
    ("barcode-string-birth", lambda t: topology.Barcode.from_dict(
        _barcode_dict(births=["0", 1.0, 2.0])), "births"),
    ("barcode-nan-death", lambda t: topology.Barcode.from_dict(
        _barcode_dict(deaths=["inf", "nan", 4.0])), "deaths"),
    ("barcode-missing-key", lambda t: topology.Barcode.from_dict({"births": []}), "keys"),
    ("barcode-not-dict", lambda t: topology.Barcode.from_dict([1, 2]), "keys"),
    ("barcode-edges-shape", lambda t: topology.Barcode.from_dict(
        _barcode_dict(saddle_edges=[[0, 1, 2], [0, 1], [0, 1]])), "saddle_edges"),
    # configs (items 12, 19)
    ("config-not-a-mapping", lambda t: ExperimentConfig.from_dict([1, 2]), "object"),
    ("config-device-int", lambda t: ExperimentConfig.from_dict({"device": 5}), "'device'"),
    ("config-heads-str", lambda t: ExperimentConfig.from_dict({"heads": "4"}), "'heads'"),
    ("config-data-root-int", lambda t: ExperimentConfig.from_dict({"data_root": 5}),
     "'data_root'"),
    ("config-k-float", lambda t: ExperimentConfig.from_dict({"k": 3.0}), "'k'"),
    ("validate-device-int", lambda t: ExperimentConfig(device=5), "'device'"),
    ("validate-heads-str", lambda t: ExperimentConfig(arch="transformer", dataset="modadd",
                                                      heads="4"), "'heads'"),
    ("validate-cuda-abc", lambda t: ExperimentConfig(device="cuda:abc"), "device"),
    # Result.from_dict (item 5)
    ("result-merged-into", lambda t: Result.from_dict(_result_json(
        t, _set("barcode.merged_into", [10**30, 0, 0]))), "merged_into"),
    ("result-score-norm", lambda t: Result.from_dict(_result_json(
        t, _set("config.score_norm", "bogus"))), "score_norm"),
    ("result-to-score-empty", lambda t: Result.from_dict(_result_json(t, _set("to_score", {}))),
     "to_score"),
    ("result-barriers-shape", lambda t: Result.from_dict(_result_json(
        t, _set("barriers", [[1.0]]))), "barriers"),
    ("result-minima-string", lambda t: Result.from_dict(_result_json(
        t, lambda d: d["minima"][0].update(train_loss="low"))), "train_loss"),
    ("result-profiles-count", lambda t: Result.from_dict(_result_json(
        t, _set("profiles", []))), "profiles"),
    ("result-barcode-minimum", lambda t: Result.from_dict(_result_json(
        t, lambda d: d["barcode"].update(minima=[0, 1, 99]))), "barcode"),
    ("result-n-params", lambda t: Result.from_dict(_result_json(t, _set("n_params", "x"))),
     "n_params"),
    ("result-not-dict", lambda t: Result.from_dict([1]), "object"),
    # stages with correct hashes but inconsistent content (item 6)
    ("minima-thetas-1d", lambda t: Minima.from_arrays(_minima_arrays(
        t, lambda a: a.update(thetas=a["thetas"].reshape(-1)))), "thetas"),
    ("minima-thetas-nan", lambda t: Minima.from_arrays(_minima_arrays(
        t, lambda a: a.update(thetas=np.full_like(a["thetas"], np.nan)))), "NaN"),
    ("minima-loss-length", lambda t: Minima.from_arrays(_minima_arrays(
        t, lambda a: a.update(train_loss=a["train_loss"][:1]))), "train_loss"),
    ("minima-missing-field", lambda t: Minima.from_arrays(_minima_arrays(
        t, lambda a: a.pop("seeds"))), "seeds"),
    ("paths-pair-ge-k", lambda t: Paths.from_arrays(_paths_arrays(
        t, lambda a: a.update(pairs=a["pairs"] + 10))), "pairs"),
    ("paths-offsets", lambda t: Paths.from_arrays(_paths_arrays(
        t, lambda a: a.update(image_offsets=a["image_offsets"] + 1))), "image_offsets"),
    ("paths-images-nan", lambda t: Paths.from_arrays(_paths_arrays(
        t, lambda a: a.update(images=np.full_like(a["images"], np.nan)))), "NaN"),
    ("paths-barriers-length", lambda t: Paths.from_arrays(_paths_arrays(
        t, lambda a: a.update(barriers=a["barriers"][:0]))), "barriers"),
    # cost cliffs (item 17)
    ("grid-14d", lambda t: topology.grid_barcode(np.zeros((2,) * 14)), "too large"),
    ("store-file-root", lambda t: ResultStore("/etc/hostname"), "is a file"),
    ("atomic-to-directory", lambda t: store_mod.atomic_write_bytes("/tmp", b"x"),
     "is a directory"),
]


@pytest.mark.parametrize("name,call,says", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_bad_input(name: str, call: Callable, says: str, template) -> None:
    with pytest.raises(ValueError) as info:
        call(template)
    assert type(info.value) in (ValueError, CorruptResultError)  # not a TypeError subclass
    assert says.lower() in str(info.value).lower()


def test_store_never_drops_without_the_lock(template, tmp_path: Path) -> None:
    source, run_id = template
    store = ResultStore(tmp_path / "r")
    shutil.copytree(source, store.root)
    with pytest.raises(RuntimeError, match="lock"):
        store.load_or_drop(run_id, "minima")
    with pytest.raises(RuntimeError, match="lock"):
        store.clean_temp(run_id)


# --------------------------------------------------------------------------- wrong or lost results


def _text_config(path: str) -> ExperimentConfig:
    return ExperimentConfig(dataset="text", arch="transformer", data_root=path, width=8,
                            depth=1, heads=2, k=2, steps=5, batch_size=16, n_train=64,
                            n_test=32, images=1, path_steps=2, eval_points=1, device="cpu")


def test_run_id_names_the_data_content_not_its_path(tmp_path: Path, monkeypatch) -> None:
    store = ResultStore(tmp_path / "results")
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    first = run_experiment(_text_config(str(text)), store)
    text.write_text("pack my box with five dozen liquor jugs! " * 40)  # rewritten in place
    second = run_experiment(_text_config(str(text)), store)
    assert second.run_id != first.run_id
    assert load_result(store, first.run_id) is not None  # the old result is kept
    # The same content under another (relative) path is the same run.
    other = tmp_path / "elsewhere"
    other.mkdir()
    shutil.copy(text, other / "t.txt")
    monkeypatch.chdir(other)
    assert _text_config("t.txt").run_id == second.run_id
    (other / "t.txt").write_text("something else entirely, a different text. " * 40)
    assert _text_config("t.txt").run_id not in (first.run_id, second.run_id)


def test_stages_of_other_data_tensors_are_recomputed(template, tmp_path: Path) -> None:
    source, run_id = template
    store = ResultStore(tmp_path / "results")
    shutil.copytree(source, store.root)
    store.drop_stage(run_id, "result")
    store.drop_stage(run_id, "paths")
    meta, arrays = store.load_stage(run_id, "minima")
    store.save_stage(run_id, "minima", {**meta, "tensors": "0" * 64}, arrays)
    with pytest.warns(RuntimeWarning, match="other data tensors"):
        result = run_experiment(TINY, store)
    assert store.load_stage(run_id, "minima")[0]["tensors"] != "0" * 64
    assert result.run_id == run_id


@pytest.mark.parametrize("stage,edit", [
    ("minima", lambda a: a.update(thetas=a["thetas"][:, :-1])),
    ("minima", lambda a: a.update(thetas=np.full_like(a["thetas"], np.nan))),
    ("paths", lambda a: a.update(pairs=a["pairs"] + 3)),
    ("paths", lambda a: a.update(images=a["images"][:, :-1])),
], ids=["thetas-shape", "thetas-nan", "pair-ge-k", "images-width"])
def test_inconsistent_stage_is_dropped_and_recomputed(template, tmp_path: Path, stage, edit
                                                      ) -> None:
    source, run_id = template
    results = tmp_path / "results"
    shutil.copytree(source, results)
    store = ResultStore(results)
    expected = load_result(store, run_id)
    store.drop_stage(run_id, "result")
    _edit_arrays(results, run_id, stage, edit)
    with pytest.warns(RuntimeWarning, match="unusable"):
        result = run_experiment(TINY, store)
    assert result.barcode == expected.barcode  # recomputed identically
    assert load_result(store, run_id) is not None


def test_malformed_result_is_rebuilt_from_finished_stages(template, tmp_path: Path,
                                                          monkeypatch) -> None:
    source, run_id = template
    results = tmp_path / "results"
    shutil.copytree(source, results)
    _edit_stage(results, run_id, "result",
                lambda r: r["meta"]["barcode"].update(merged_into=[10**30, 0, 0]))
    from lossbarcode import minima

    monkeypatch.setattr(minima, "find_minima", lambda *a, **k: pytest.fail("retrained"))
    with pytest.warns(RuntimeWarning, match="merged_into"):
        result = run_experiment(TINY, ResultStore(results))
    assert load_result(ResultStore(results), run_id, strict=True).barcode == result.barcode


def test_newer_version_is_refused_and_kept(template, tmp_path: Path) -> None:
    source, run_id = template
    results = tmp_path / "results"
    shutil.copytree(source, results)
    for stage in ("minima", "paths", "result"):
        _edit_stage(results, run_id, stage, lambda r: r.update(version=2))
    before = _finished(results) | {p.name: p.read_bytes() for p in (results / run_id).iterdir()}
    store = ResultStore(results)
    for call in (lambda: run_experiment(TINY, store), lambda: load_result(store, run_id),
                 lambda: load_result(store, run_id, strict=True)):
        with pytest.raises(NewerFormatError, match="newer lossbarcode"):
            call()
    assert {p.name: p.read_bytes() for p in (results / run_id).iterdir()} == {
        k: v for k, v in before.items() if isinstance(k, str)}


def test_reader_waits_for_the_writer_and_deletes_nothing(tmp_path: Path, monkeypatch) -> None:
    store = ResultStore(tmp_path / "results")
    run = "race0123"
    store.save_stage(run, "minima", {"v": 1}, {"x": np.zeros(10)})
    monkeypatch.setattr(store_mod, "READ_RETRY_S", 30.0)
    got = []
    with store.lock(run):
        # Mid-replacement: the new .npz is in place, the JSON still describes the old one.
        store_mod._atomic_write(store.root / run / "minima.npz",
                                lambda f: store_mod._write_npz(f, {"x": np.ones(10)}))
        reader = threading.Thread(target=lambda: got.append(store.read(run, "minima")))
        reader.start()
        time.sleep(0.5)
        assert reader.is_alive()  # waiting for the writer's lock, not judging
        store.save_stage(run, "minima", {"v": 2}, {"x": np.ones(10)})
    reader.join(30)
    assert got[0][0] == {"v": 2} and np.array_equal(got[0][1]["x"], np.ones(10))


def test_nan_and_inf_barriers_save_as_null(template, tmp_path: Path) -> None:
    source, run_id = template
    result = load_result(ResultStore(source), run_id, strict=True)
    # Two paths that overflowed, and everything derived from the barriers made to match.
    barriers = np.array([np.nan, np.inf, result.path_barriers[2]])
    matrix = topology.pair_barrier_matrix(result.pairs, np.where(np.isnan(barriers), np.inf,
                                                                 barriers),
                                          result.train_loss, result.k)
    barcodes = [_valid_barcode(result.train_loss, result.diverged, matrix, result.config.rule,
                               births) for births in (result.minima_certified[~result.diverged],
                                                      None)]
    broken = dataclasses.replace(
        result, path_barriers=barriers, barrier_matrix=matrix, barcode=barcodes[0],
        scores=all_scores(barcodes[0]), barcode_all=barcodes[1],
        scores_all=all_scores(barcodes[1]),
        profiles=tuple((t, np.full_like(loss, np.inf)) for t, loss in result.profiles))
    store = ResultStore(tmp_path / "r")
    with store.lock(run_id):
        store.save_stage(run_id, "result", broken.to_dict())
    back = Result.from_dict(store.load_stage(run_id, "result")[0])
    assert np.isnan(back.path_barriers[:2]).all()
    assert back.path_barriers[2] == result.path_barriers[2]


def test_divergence_to_large_finite_losses_is_flagged(digits) -> None:
    from lossbarcode import models
    from lossbarcode.landscape import Landscape
    from lossbarcode.minima import find_minima

    model = models.build("fcn", 8, 1, digits.input_shape, digits.n_outputs, seed=0)
    land = Landscape.from_dataset(model, digits, device="cpu")
    # SGD at lr 1e3 blows up (NaN/inf, or losses in the thousands); where the full-batch
    # phase brings a blown-up network back down, it lands on a dead plateau at chance loss:
    # diverged or stuck, warned about, never certified.
    for optimizer in ("sgd", "adam"):
        with pytest.warns(RuntimeWarning, match="diverged|did not learn"):
            found = find_minima(land, 3, optimizer=optimizer, lr=1e3, steps=30, batch_size=32)
        assert not found.certified.any() and np.all(found.diverged | found.stuck)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fine = find_minima(land, 2, steps=30, batch_size=32)
    assert not fine.diverged.any()


def test_temp_files_are_cleaned_up_on_the_next_run(template, tmp_path: Path) -> None:
    source, run_id = template
    results = tmp_path / "results"
    shutil.copytree(source, results)
    leftover = results / run_id / ".minima.npz.0123456789abcdef.tmp"
    leftover.write_bytes(b"half")
    keep = results / run_id / "notes.tmp"  # not ours: left alone
    keep.write_text("mine")
    run_experiment(TINY, ResultStore(results))
    assert not leftover.exists() and keep.exists()


def test_run_id_is_canonical() -> None:
    assert TINY.run_id == TINY.replace(device="auto").run_id
    assert TINY.replace(eval_subset=100).run_id == TINY.replace(eval_subset=500).run_id \
        == TINY.run_id
    assert TINY.replace(eval_subset=50).run_id != TINY.run_id
    assert TINY.replace(heads=2).run_id == TINY.run_id  # fcn has no heads
    # align only when on: unaligned runs keep the ids they had before it existed.
    assert set(TINY.identity()) == (set(TINY.to_dict()) - {"device", "align"}) | {
        "data", "paths_version"}
    assert set(TINY.replace(align=True).identity()) == set(TINY.identity()) | {"align"}


def test_lock_side_file_names_the_holder(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "results")
    messages: list[str] = []
    with store.lock("held1234"):
        assert f"pid {os.getpid()}" in store.lock_holder("held1234")
        with pytest.raises(TimeoutError, match=f"pid {os.getpid()}"):
            with store.lock("held1234", timeout=0.2, on_wait=messages.append):
                pass
    assert messages and "waiting for run held1234" in messages[0]
    assert store.lock_holder("held1234") == ""  # released: the side file is gone


def test_direct_rule_equals_the_per_minimum_scan() -> None:
    """The O(E log E) direct rule against the obvious per-minimum scan (the old O(K^3) code)."""
    def scan(values, edges, edge_values):
        k = values.shape[0]
        rank = np.empty(k, dtype=np.int64)
        rank[np.argsort(values, kind="stable")] = np.arange(k)
        out: list[list[int]] = [[], [], [], []]
        for v in np.argsort(values, kind="stable"):
            other = np.where(edges[:, 0] == v, edges[:, 1], edges[:, 0])
            cand = np.flatnonzero(((edges[:, 0] == v) | (edges[:, 1] == v))
                                  & (rank[other] < rank[v]))
            if cand.size == 0:
                out[3].append(v)
                continue
            best = cand[np.lexsort((rank[other[cand]], edge_values[cand]))[0]]
            out[0].append(v)
            out[1].append(best)
            out[2].append(other[best])
        return [np.asarray(x, dtype=np.int64) for x in out]

    rng = np.random.default_rng(1)
    for _ in range(300):
        k = int(rng.integers(1, 12))
        values = rng.integers(0, 4, k).astype(float)  # ties on purpose
        i, j = np.triu_indices(k, 1)
        keep = rng.random(len(i)) < 0.6
        edges = np.stack([i[keep], j[keep]], 1).astype(np.int64).reshape(-1, 2)
        ev = np.maximum(rng.integers(0, 6, len(edges)).astype(float),
                        np.maximum(values[edges[:, 0]], values[edges[:, 1]]))
        for got, want in zip(topology._direct_rule(values, edges, ev),
                             scan(values, edges, ev), strict=True):
            assert np.array_equal(got, want)


def test_grid_barcode_warns_before_a_large_grid() -> None:
    with pytest.warns(RuntimeWarning, match="neighbour offsets"):
        topology.grid_edges((2,) * 10)
    assert topology.grid_edges((1,) * 14 + (3,)).shape == (2, 2)  # length-1 axes cost nothing


def test_list_shows_every_unusable_run_and_never_blocks(template, tmp_path: Path) -> None:
    """One bad run never hides the others: links, special files, deep JSON, a folder named
    result.json -- each listed as unusable, at once, and `run` recomputes the one it may."""
    source, run_id = template
    results = tmp_path / "results"
    shutil.copytree(source, results)
    makers = {"a": os.mkfifo, "b": lambda p: p.symlink_to("/dev/zero"), "c": _deep,
              "d": Path.mkdir, "e": lambda p: p.symlink_to(results / run_id / "result.json")}
    for letter, make in makers.items():
        shutil.copytree(results / run_id, results / (letter * 16))
        (results / (letter * 16) / "result.json").unlink()
        make(results / (letter * 16) / "result.json")
    (results / ("f" * 16)).symlink_to(results / run_id, target_is_directory=True)
    before = _finished(results)
    done = _cli(["list"], tmp_path, results, timeout=60)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()[1:]}
    assert " done " in rows[run_id]
    for letter, says in (("a", "FIFO"), ("b", "symbolic link"), ("c", "nested"),
                         ("d", "directory"), ("e", "symbolic link"), ("f", "symbolic link")):
        assert "unusable" in rows[letter * 16] and says in rows[letter * 16], rows[letter * 16]
    assert _finished(results) == before
    # The deep one is an ordinary corrupt file: `run` drops it and rebuilds the result.
    (results / ("c" * 16)).rename(results / "deep")
    (results / run_id / "result.json").write_text("[" * 200_000 + "]" * 200_000)
    done = _cli(["run", "-q", *TINY_FLAGS], tmp_path, results)
    assert done.returncode == 0 and done.stdout.strip() == run_id, done.stderr
    assert load_result(ResultStore(results), run_id, strict=True) is not None


def test_result_from_dict_recomputes_what_is_derived(template) -> None:
    """Result.from_dict is no softer than the store: a score of 99 next to its barcode, a
    barcode not made from its barriers, flipped certificates are all refused."""
    Result.from_dict(_result_json(template, lambda d: None))  # the genuine one loads
    for edit, says in ((lambda d: d["to_score"].update(l2=99.0), "to_score"),
                       (lambda d: d["to_score_all"].update(sum=99.0), "to_score_all"),
                       (_nan_barriers, "path_barriers"),
                       (lambda d: d["minima"][0].update(train_loss=None), "train_loss"),
                       (lambda d: d["minima"][0].update(grad_norm=-1.0), "grad_norm"),
                       (lambda d: d["paths"][0].update(converged=True, stalled=True),
                        "converged and stalled")):
        with pytest.raises(ValueError, match=says):
            Result.from_dict(_result_json(template, edit))


def test_the_cost_model_learns_only_from_results_that_verify(template, tmp_path: Path) -> None:
    """Copies of a run under other ids (rejected by `list` as edited), claiming absurd timings,
    one a huge integer, change nothing and raise nothing."""
    from lossbarcode.cost import store_calibration

    source, run_id = template
    results = tmp_path / "results"
    shutil.copytree(source, results)
    store = ResultStore(results)
    honest = store_calibration(store, "cpu")
    for n, seconds in enumerate([1e-6] * 5 + [10**400]):
        name = f"{n:016x}"
        shutil.copytree(results / run_id, results / name)
        _edit_stage(results, name, "result", lambda r, n=name, s=seconds: (
            r.update(run_id=n), r["meta"].update(run_id=n),
            r["meta"]["timings"].update(minima=s, paths=s)))
    assert len(store.list()) == 7
    assert store_calibration(store, "cpu") == honest


def test_none_means_none_in_a_config_file_as_on_the_command_line() -> None:
    config = ExperimentConfig.from_dict({"score_normalize": "none", "steps": "None"})
    assert config.score_normalize is None and config.steps is None
    with pytest.raises(ValueError, match="score_norm must be"):
        ExperimentConfig.from_dict({"score_norm": "none"})  # not optional: still refused


def test_every_bounded_knob_is_refused_above_its_bound_and_named() -> None:
    """Each field of choices.FIELD_MAX takes its bound and refuses one more, naming the field
    and the bound; lr and path_lr refuse more than LR_MAX; the help states each bound."""
    from lossbarcode import choices
    from lossbarcode.config import field_help

    assert {"polish_steps", "path_steps", "steps", "k", "images", "eval_points", "width",
            "depth", "batch_size", "path_max_steps", "n_train", "eval_subset"} <= set(
        choices.FIELD_MAX)
    for name, most in choices.FIELD_MAX.items():
        assert getattr(ExperimentConfig(**{name: most}), name) == most
        with pytest.raises(ValueError, match=f"{name} must be at most {most}, got {most + 1}"):
            ExperimentConfig(**{name: most + 1})
        assert f"at most {most}" in field_help(name)
    for name in ("lr", "path_lr"):
        ExperimentConfig(**{name: choices.LR_MAX})
        with pytest.raises(ValueError, match=f"{name} must be a positive number of at most"):
            ExperimentConfig(**{name: choices.LR_MAX * 2})


def test_a_run_beyond_a_day_needs_yes(tmp_path: Path) -> None:
    """The CLI refuses work the cost model puts beyond choices.CONFIRM_BEYOND_S unless --yes,
    and never counts finished runs."""
    from lossbarcode.cli import _refuse_beyond_a_day

    store = ResultStore(tmp_path)
    slow = ExperimentConfig(k=1024, steps=10**7, device="cpu")
    with pytest.raises(ValueError, match="pass --yes"):
        _refuse_beyond_a_day([slow], store, False, "run")
    _refuse_beyond_a_day([slow], store, True, "run")  # --yes: no estimate, no refusal
    _refuse_beyond_a_day([TINY], store, False, "run")  # seconds, not days
    store.save_stage(slow.run_id, "result", {"done": True})  # finished: costs nothing
    _refuse_beyond_a_day([slow], store, False, "run")


def test_an_eval_subset_covering_the_whole_dataset_is_no_subset() -> None:
    """With --n-train unset, an eval_subset at least the dataset's training size names the
    same run as no eval_subset (the landscape then evaluates every example alike)."""
    from lossbarcode import choices

    default = ExperimentConfig()
    full = choices.DATASET_SHAPES["digits"][2]
    assert ExperimentConfig(eval_subset=10**6).run_id == default.run_id
    assert ExperimentConfig(eval_subset=full).run_id == default.run_id
    assert ExperimentConfig(eval_subset=full - 1).run_id != default.run_id
    spirals = ExperimentConfig(dataset="spirals")
    assert spirals.replace(eval_subset=choices.SYNTHETIC_N).run_id == spirals.run_id
    assert spirals.replace(n_train=2000, eval_subset=1000).run_id != spirals.replace(
        n_train=2000).run_id
    assert choices.train_examples_at_most("text", None) == 4096
    assert choices.train_examples_at_most("nope", None) is None


def test_a_config_file_saying_none_is_read_as_on_the_command_line(tmp_path: Path) -> None:
    """score_normalize "none" in a JSON or TOML config file is accepted through the CLI's
    reader, as --score-normalize none is."""
    from lossbarcode.cli import _config_from, build_parser

    for name, text in (("c.json", '{"score_normalize": "none", "score_norm": "max"}'),
                       ("c.toml", 'score_normalize = "none"\nscore_norm = "max"\n')):
        (tmp_path / name).write_text(text)
        args = build_parser().parse_args(["run", "--config", str(tmp_path / name)])
        config = _config_from(args)
        assert config.score_normalize is None and config.score_norm == "max"
    flags = build_parser().parse_args(["run", "--score-normalize", "none"])
    assert _config_from(flags).score_normalize is None
