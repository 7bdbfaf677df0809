"""A results directory of runs, stored in stages as JSON + ``.npz`` -- never pickle.

Layout under the root (``./results``, ``$LOSSBARCODE_RESULTS``, or an explicit path)::

    <root>/<run_id>/<stage>.json     metadata, format version, names + sha256 of the arrays
                                     (and the stages it was computed from, if it says)
    <root>/<run_id>/<stage>.npz      named numpy arrays (optional)
    <root>/.locks/<run_id>.lock      inter-process lock of a run
    <root>/.locks/<run_id>.lock.json who holds it: pid, host, since when, command

Every file is written atomically (temp file in the same directory, fsync, ``os.replace``), the
``.npz`` before the ``.json``, so a stage exists exactly when its JSON does and a crash mid-write
leaves the stage absent, never half-written. Each JSON records the sha256 of its ``.npz`` and a
sha256 of its own content. Loading checks both and refuses anything it cannot verify with
:class:`CorruptResultError` (or :class:`NewerFormatError` for a file a newer lossbarcode wrote).
Arrays are read with ``allow_pickle=False``, so a shared results folder can never execute code.

Reading never deletes: :meth:`ResultStore.read` reports an unusable stage and returns None.
Only a holder of the run's lock may drop a stage (:meth:`ResultStore.load_or_drop`), so a reader
never removes a file a writer is replacing; a reader that sees a stage mid-replacement re-reads it
once it can take the lock (or after a short wait, in a read-only folder).

    store = ResultStore()
    with store.lock(run_id):
        if not store.exists(run_id):
            store.save_stage(run_id, "result", {"to_score": 0.3}, {"bars": bars})
    meta, arrays = store.load_stage(run_id, "result")
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import re
import secrets
import shutil
import socket
import sys
import threading
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import filelock
import numpy as np

__all__ = ["ENV_VAR", "FORMAT_VERSION", "CorruptResultError", "NewerFormatError", "ResultStore",
           "atomic_write_bytes"]

ENV_VAR = "LOSSBARCODE_RESULTS"
DEFAULT_ROOT = "results"
FORMAT_VERSION = 1
_FORMAT = "lossbarcode.store"

# Run ids and stage names become file names: no dots, no separators, so no path traversal.
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Array names only live inside the zip; dots are allowed for names like "layer.0.weight".
_ARRAY_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
# Temp files of _atomic_write: ".<name>.<16 hex>.tmp".
_TEMP = re.compile(r"\..+\.[0-9a-f]{16}\.tmp")
# How long a reader that saw a stage mid-replacement waits for the writer's lock before it
# re-reads anyway (a run holds its lock for minutes while it computes the next stage).
READ_RETRY_S = 2.0

# (lock file, thread id) of every run lock held in this process: only a holder may drop stages,
# and a holder's own reads must not wait for the lock it holds.
_HELD: set[tuple[str, int]] = set()
_HELD_GUARD = threading.Lock()


class CorruptResultError(ValueError):
    """A stored stage exists but cannot be trusted (truncated, edited, foreign or unsafe)."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            f"stored result {path} is unusable ({reason}); the next 'lossbarcode run' of it "
            f"recomputes it -- or delete the folder {path.parent} by hand"
        )


class NewerFormatError(ValueError):
    """A stored stage was written by a newer lossbarcode (a later format version). It is left
    alone: never read, never dropped, never overwritten."""

    def __init__(self, path: Path, version: int) -> None:
        self.path = path
        super().__init__(
            f"stored result {path} was made by a newer lossbarcode (format version {version}; "
            f"this one reads version {FORMAT_VERSION}); upgrade lossbarcode to use it, or use "
            "another results folder -- nothing was changed"
        )


def _check_name(name: object, what: str, pattern: re.Pattern[str] = _NAME) -> str:
    if not isinstance(name, str) or not pattern.fullmatch(name):
        raise ValueError(f"invalid {what} {name!r}: must match {pattern.pattern}")
    return name


def _check_json(value: object, where: str) -> None:
    """Raise ValueError naming the first value that JSON (with allow_nan=False) cannot hold."""
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(
                f"meta{where} is {value!r}: JSON cannot hold inf/nan, encode it explicitly"
            )
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            # Non-str keys would silently come back as strings.
            if not isinstance(key, str):
                raise ValueError(f"meta{where} has a non-string key {key!r}")
            _check_json(item, f"{where}[{key!r}]")
        return
    if isinstance(value, list | tuple):  # tuples come back as lists
        for i, item in enumerate(value):
            _check_json(item, f"{where}[{i}]")
        return
    raise ValueError(
        f"meta{where} is a {type(value).__name__}, not JSON-serialisable "
        "(convert numpy scalars with .item(), arrays go in `arrays`)"
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not possible on every platform (e.g. Windows).
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _record_digest(record: Mapping[str, Any]) -> str:
    """sha256 of a stage record (without its own ``sha256`` key), in a canonical form."""
    body = {key: value for key, value in record.items() if key != "sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file next to it, fsync, rename): a crash or
    a full disk leaves the old file intact, never a half-written one. ``ValueError`` if
    ``path`` is a directory or its folder does not exist; ``OSError`` if it cannot be written."""
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{target} is a directory; give a file name")
    if not target.parent.is_dir():
        raise ValueError(f"folder {target.parent} does not exist; create it first")
    try:
        _atomic_write(target, lambda f: f.write(data))
    except OSError as err:  # name the file asked for, not the temp file
        raise OSError(err.errno, err.strerror, str(target)) from None


def _atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    # Temp name starts with "." and ends with ".tmp", so it is never mistaken for a stage.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    # os.open with 0o666 honours the umask (mkstemp would force 0o600 on a shared folder).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _write_npz(f: IO[bytes], arrays: dict[str, np.ndarray]) -> None:
    # Same layout as np.savez, but written by hand so any array name is allowed (np.savez
    # reserves "file"/"allow_pickle") and pickling is refused at write time too.
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, array in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ResultStore:
    """Runs stored in stages under ``root``; see the module docstring for the layout."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        if root is None:
            root = os.environ.get(ENV_VAR) or DEFAULT_ROOT
        # Absolute now, so a later chdir does not move the store. Created lazily on first write.
        self.root: Path = Path(root).expanduser().absolute()
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"results folder {self.root} is a file, not a folder; pass "
                             "--results with a folder (it is created if missing)")

    def __repr__(self) -> str:
        return f"ResultStore({str(self.root)!r})"

    # -- paths -------------------------------------------------------------------------------

    def _run_dir(self, run_id: str) -> Path:
        return self.root / _check_name(run_id, "run id")

    def _paths(self, run_id: str, stage: str) -> tuple[Path, Path]:
        run_dir = self._run_dir(run_id)
        _check_name(stage, "stage name")
        return run_dir / f"{stage}.json", run_dir / f"{stage}.npz"

    # -- stages ------------------------------------------------------------------------------

    def save_stage(
        self,
        run_id: str,
        stage: str,
        meta: dict[str, Any],
        arrays: Mapping[str, np.ndarray] | None = None,
        inputs: Sequence[str] | None = None,
    ) -> None:
        """Store one stage atomically, replacing any earlier version of it.

        ``meta`` must be JSON-serialisable without inf/nan (tuples come back as lists); ``arrays``
        maps names to numeric/bool/str arrays -- object arrays are refused (they need pickle).
        ``inputs``: the stages this one is computed from (:meth:`stage_inputs`), recorded so
        that whoever recomputes one of them can drop it without knowing what it is.
        Raises ValueError on invalid input, before anything is written.
        """
        json_path, npz_path = self._paths(run_id, stage)
        if not isinstance(meta, Mapping):
            raise ValueError(f"meta must be a dict, got {type(meta).__name__}")
        _check_json(meta, "")
        if inputs is not None:
            inputs = [_check_name(name, "input stage", _NAME) for name in inputs]
        checked: dict[str, np.ndarray] = {}
        for name, value in (arrays or {}).items():
            _check_name(name, "array name", _ARRAY_NAME)
            array = np.asarray(value)
            if array.dtype.hasobject:
                raise ValueError(
                    f"array {name!r} has dtype {array.dtype}: object arrays need "
                    "pickle and are refused"
                )
            checked[name] = array

        json_path.parent.mkdir(parents=True, exist_ok=True)
        # Drop the old JSON first: if we crash below, the stage reads as absent (recomputed)
        # rather than as the old JSON pointing at a half-replaced .npz.
        with contextlib.suppress(FileNotFoundError):
            json_path.unlink()
            _fsync_dir(json_path.parent)
        record: dict[str, Any] = {
            "format": _FORMAT,
            "version": FORMAT_VERSION,
            "run_id": run_id,
            "stage": stage,
            "arrays": None,
        }
        if inputs is not None:
            record["inputs"] = inputs
        if checked:
            _atomic_write(npz_path, lambda f: _write_npz(f, checked))
            record["arrays"] = {"names": list(checked), "sha256": _sha256_file(npz_path)}
        else:
            npz_path.unlink(missing_ok=True)
        record["meta"] = meta
        record["sha256"] = _record_digest(record)
        text = json.dumps(record, allow_nan=False, indent=2) + "\n"
        _atomic_write(json_path, lambda f: f.write(text.encode("utf-8")))

    def load_stage(
        self, run_id: str, stage: str
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        """Return ``(meta, arrays)`` of a stage, or None if it was never (fully) saved.

        Raises CorruptResultError if the stage is present but truncated, edited, written by
        an older format version, or holds anything that would need pickle to read;
        NewerFormatError if a newer lossbarcode wrote it. Never changes any file.
        """
        json_path, npz_path = self._paths(run_id, stage)
        record = self._record(run_id, stage)
        if record is None:
            return None
        meta = record["meta"]
        spec = record.get("arrays")
        if spec is None:
            return meta, {}
        if (
            not isinstance(spec, dict)
            or not isinstance(spec.get("names"), list)
            or not isinstance(spec.get("sha256"), str)
        ):
            raise CorruptResultError(json_path, "malformed array record")
        try:
            # Read once and parse from memory: what we hash is exactly what we parse.
            data = npz_path.read_bytes()
        except FileNotFoundError:
            raise CorruptResultError(npz_path, "the .npz file is missing") from None
        if hashlib.sha256(data).hexdigest() != spec["sha256"]:
            raise CorruptResultError(npz_path, "sha256 mismatch: truncated or modified")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
        except Exception as exc:  # any failure to parse these bytes means corrupt
            raise CorruptResultError(npz_path, f"unreadable arrays: {exc}") from None
        if sorted(arrays) != sorted(spec["names"]):
            raise CorruptResultError(npz_path, "array names differ from the JSON record")
        if not all(isinstance(a, np.ndarray) and not a.dtype.hasobject for a in arrays.values()):
            raise CorruptResultError(npz_path, "contains a non-array or object member")
        return meta, {name: arrays[name] for name in spec["names"]}

    def _record(self, run_id: str, stage: str) -> dict[str, Any] | None:
        """The verified JSON record of a stage (None if absent); CorruptResultError /
        NewerFormatError as :meth:`load_stage`. Its ``.npz`` is not read."""
        json_path, _ = self._paths(run_id, stage)
        try:
            raw = json_path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            record = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except ValueError as exc:  # includes UnicodeDecodeError and JSONDecodeError
            raise CorruptResultError(json_path, f"unreadable JSON: {exc}") from None
        if not isinstance(record, dict) or record.get("format") != _FORMAT:
            raise CorruptResultError(json_path, "not a lossbarcode result file")
        version = record.get("version")
        if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
            raise NewerFormatError(json_path, version)
        if version != FORMAT_VERSION:
            raise CorruptResultError(
                json_path, f"format version {version!r}, expected {FORMAT_VERSION}"
            )
        try:
            digest = _record_digest(record)
        except ValueError as exc:  # a value JSON without NaN cannot hold
            raise CorruptResultError(json_path, f"unreadable JSON: {exc}") from None
        if record.get("sha256") != digest:
            raise CorruptResultError(json_path, "its checksum does not match: edited or "
                                                "damaged")
        if record.get("stage") != stage or record.get("run_id") != run_id:
            raise CorruptResultError(
                json_path, f"it belongs to {record.get('run_id')!r}/{record.get('stage')!r}"
            )
        meta = record.get("meta")
        if not isinstance(meta, dict):
            raise CorruptResultError(json_path, "no metadata")

        return record

    def stage_inputs(self, run_id: str, stage: str) -> tuple[str, ...] | None:
        """The stages ``stage`` was recorded as computed from (``save_stage(inputs=...)``);
        None when it recorded none (older files, or a stage that did not say) or is
        unreadable. Reads one JSON file and never changes anything."""
        try:
            record = self._record(run_id, stage)
        except CorruptResultError:
            return None
        inputs = None if record is None else record.get("inputs")
        if not isinstance(inputs, list) or not all(isinstance(n, str) for n in inputs):
            return None
        return tuple(inputs)

    def load_or_drop(self, run_id: str, stage: str, warn: bool = True
                     ) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        """Like :meth:`load_stage`, but a corrupt stage is dropped (so it gets recomputed) and
        read as absent, with a ``RuntimeWarning`` that says so when ``warn``.

        Only for the holder of the run's lock (``RuntimeError`` otherwise): a reader without it
        could delete a file that a writer is replacing. A stage of a newer format version is
        never dropped: :class:`NewerFormatError` propagates."""
        if not self.holds_lock(run_id):
            raise RuntimeError(f"load_or_drop({run_id!r}, {stage!r}) needs the run's lock; "
                               "use read() to read without it")
        try:
            return self.load_stage(run_id, stage)
        except CorruptResultError as err:
            if warn:
                warnings.warn(f"{err.path} is unusable ({err.reason}); recomputing stage "
                              f"{stage!r}", RuntimeWarning, stacklevel=3)
            self.drop_stage(run_id, stage)
            return None

    def load_legacy_meta(self, run_id: str, stage: str) -> dict[str, Any] | None:
        """The metadata of a stage written before stage records carried their own checksum
        (format version 1 without ``sha256``), or None if the stage is not such a record.
        Such a record cannot be verified here: the caller must check its content (the
        result of an old run is checked against its run id). Never changes any file."""
        json_path, _ = self._paths(run_id, stage)
        try:
            record = json.loads(json_path.read_bytes().decode("utf-8"),
                                parse_constant=_reject_constant)
        except (OSError, ValueError):
            return None
        if (not isinstance(record, dict) or record.get("format") != _FORMAT
                or record.get("version") != 1 or "sha256" in record
                or record.get("stage") != stage or record.get("run_id") != run_id
                or record.get("arrays") is not None or not isinstance(record.get("meta"), dict)):
            return None
        return record["meta"]

    def read(self, run_id: str, stage: str, warn: bool = True
             ) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        """Like :meth:`load_stage`, but an unusable stage reads as absent (None), with a
        ``RuntimeWarning`` when ``warn``; nothing is ever deleted or written.

        A stage that fails its checks may be in the middle of being replaced by the run's
        writer, so it is read again once the run's lock is free (or after
        :data:`READ_RETRY_S` seconds, or at once in a read-only folder) before it is judged
        unusable. :class:`NewerFormatError` propagates."""
        try:
            return self.load_stage(run_id, stage)
        except CorruptResultError:
            if self.holds_lock(run_id):  # nobody else can be writing it
                return self._report(run_id, stage, warn)
        with contextlib.suppress(TimeoutError, OSError, ValueError):
            with self.lock(run_id, timeout=READ_RETRY_S):
                pass
        return self._report(run_id, stage, warn)

    def _report(self, run_id: str, stage: str, warn: bool
                ) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        try:
            return self.load_stage(run_id, stage)
        except CorruptResultError as err:
            if warn:
                warnings.warn(f"{err.path} is unusable ({err.reason}); 'lossbarcode run' "
                              "recomputes it", RuntimeWarning, stacklevel=4)
            return None

    def has_temp(self, run_id: str) -> bool:
        """Whether a crash mid-write left temp files in the run's folder."""
        run_dir = self._run_dir(run_id)
        return run_dir.is_dir() and any(_TEMP.fullmatch(p.name) for p in run_dir.iterdir())

    def clean_temp(self, run_id: str) -> list[str]:
        """Remove the temp files a crash mid-write left in a run's folder; returns their names.
        Call it holding the run's lock (every writer of a run holds it)."""
        if not self.holds_lock(run_id):
            raise RuntimeError(f"clean_temp({run_id!r}) needs the run's lock")
        run_dir = self._run_dir(run_id)
        removed = []
        with contextlib.suppress(FileNotFoundError):
            for p in run_dir.iterdir():
                if _TEMP.fullmatch(p.name) and p.is_file():
                    p.unlink(missing_ok=True)
                    removed.append(p.name)
        return removed

    def has_stage(self, run_id: str, stage: str) -> bool:
        """Whether the stage's JSON exists (cheap; :meth:`load_stage` does the validation)."""
        return self._paths(run_id, stage)[0].is_file()

    def stages(self, run_id: str) -> list[str]:
        """Names of the stages present for a run, sorted ([] for an unknown run)."""
        run_dir = self._run_dir(run_id)
        if not run_dir.is_dir():
            return []
        return sorted(p.stem for p in run_dir.glob("*.json") if _NAME.fullmatch(p.stem))

    def exists(self, run_id: str) -> bool:
        """Whether the run finished, i.e. its "result" stage is present."""
        return self.has_stage(run_id, "result")

    def drop_stage(self, run_id: str, stage: str) -> None:
        """Remove one stage's files (no error if absent). The JSON goes first."""
        json_path, npz_path = self._paths(run_id, stage)
        json_path.unlink(missing_ok=True)
        npz_path.unlink(missing_ok=True)

    def delete(self, run_id: str) -> None:
        """Remove a run and all its stages (no error if absent)."""
        run_dir = self._run_dir(run_id)
        # Rename first (atomic), so readers never see a run with half its files gone.
        trash = self.root / f".trash-{run_id}-{secrets.token_hex(4)}"
        try:
            os.replace(run_dir, trash)
        except FileNotFoundError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def list(self) -> list[str]:
        """Ids of the runs with at least one stage, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and _NAME.fullmatch(p.name) and self.stages(p.name)
        )

    # -- locking -----------------------------------------------------------------------------

    def _lock_path(self, run_id: str) -> Path:
        return self.root / ".locks" / f"{_check_name(run_id, 'run id')}.lock"

    def holds_lock(self, run_id: str) -> bool:
        """Whether this thread holds the run's lock (taken with :meth:`lock`)."""
        with _HELD_GUARD:
            return (str(self._lock_path(run_id)), threading.get_ident()) in _HELD

    def lock_holder(self, run_id: str) -> str:
        """Who holds the run's lock, as a phrase ("pid 12 on host since 10:02:03 (40 s ago),
        running '...'"), from the side file its holder wrote; "" if unknown."""
        info_path = self._lock_path(run_id).with_suffix(".lock.json")
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
            since = float(info["since"])
            clock = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
            text = (f"pid {int(info['pid'])} on {info['host']} since {clock} "
                    f"({time.time() - since:.0f} s ago)")
            return text + (f", running {info['command']!r}" if info.get("command") else "")
        except (OSError, ValueError, KeyError, TypeError):
            return ""

    @contextlib.contextmanager
    def lock(self, run_id: str, timeout: float | None = None,
             on_wait: Callable[[str], Any] | None = None) -> Iterator[None]:
        """Hold an exclusive lock on a run id, across processes and threads.

        Blocks until the lock is free, or raises TimeoutError after ``timeout`` seconds; if it
        has to wait, ``on_wait(message)`` is called first with who holds the lock and since
        when. Use it around "check, compute, save" so concurrent requests for one run compute
        it only once. ``ValueError`` if the results folder is not writable.
        """
        if timeout is not None and (not isinstance(timeout, int | float) or timeout < 0):
            raise ValueError(f"timeout must be >= 0 or None, got {timeout}")
        path = self._lock_path(run_id)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(f"results folder {self.root} is not writable ({err.strerror}); "
                             "a finished run can still be read, but nothing can be computed "
                             "there: use --results with a writable folder") from None
        # A fresh FileLock per call: separate file descriptors also exclude threads of one process.
        file_lock = filelock.FileLock(path, timeout=0)
        try:
            try:
                file_lock.acquire(timeout=0)
            except filelock.Timeout:
                holder = self.lock_holder(run_id) or "another process or session"
                if on_wait is not None:
                    limit = "" if timeout is None else f" (at most {timeout:g} s)"
                    on_wait(f"waiting for run {run_id}, locked by {holder}{limit}")
                file_lock.acquire(timeout=-1 if timeout is None else timeout)
        except filelock.Timeout:
            raise TimeoutError(
                f"run {run_id} is locked by {self.lock_holder(run_id) or 'another process'} "
                f"(waited {timeout:g} s; lock file {path}); try again later or raise "
                "--lock-timeout"
            ) from None
        except OSError as err:  # e.g. a read-only file system
            raise ValueError(f"results folder {self.root} is not writable ({err.strerror}); "
                             "a finished run can still be read, but nothing can be computed "
                             "there: use --results with a writable folder") from None
        key = (str(path), threading.get_ident())
        info_path = path.with_suffix(".lock.json")
        try:
            with _HELD_GUARD:
                _HELD.add(key)
            info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                    "command": " ".join(sys.argv)}
            # Best effort: the side file only informs waiters.
            with contextlib.suppress(OSError):
                _atomic_write(info_path, lambda f: f.write(json.dumps(info).encode()))
            yield
        finally:
            with contextlib.suppress(OSError):
                info_path.unlink(missing_ok=True)
            with _HELD_GUARD:
                _HELD.discard(key)
            file_lock.release()
