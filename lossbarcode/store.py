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

Nothing outside a results folder can be hurt through it: a run folder must be a real folder
holding only regular files. A run folder that is a symbolic link, or that holds a link, a
folder, a FIFO, a socket or a device, is never read, written or deleted: it raises
:class:`UnsafeResultError` (a :class:`CorruptResultError` that is never dropped), so ``list``
shows it as unusable and ``run`` stops, naming it. Files are opened without following links
and without blocking, and only regular files of at most a stated size are read
(:func:`read_regular_file`; limits in :mod:`lossbarcode.choices`); writes go through the run
folder's own file descriptor, so swapping the folder for a link mid-write changes nothing
outside it, and never replace anything but a regular file (:func:`atomic_write_bytes`).

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
import errno
import hashlib
import io
import json
import math
import os
import re
import secrets
import shutil
import socket
import stat
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

from lossbarcode.choices import (
    MAX_ARRAYS_BYTES,
    MAX_DEMO_COPY_BYTES,
    MAX_JSON_BYTES,
    MAX_JSON_DEPTH,
    MAX_LOCK_INFO_BYTES,
)

__all__ = ["ENV_VAR", "FORMAT_VERSION", "CorruptResultError", "FileRefusedError",
           "NewerFormatError", "ResultStore", "UnsafeResultError", "atomic_write_bytes",
           "check_output_path", "copy_results", "parse_json", "read_regular_file"]

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

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_NOCTTY = getattr(os, "O_NOCTTY", 0)

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


class UnsafeResultError(CorruptResultError):
    """A run folder that is a link, or holds anything but regular files (a link, a folder, a
    FIFO, a socket, a device): never read, written, replaced or deleted -- not even by the
    holder of the run's lock, who drops ordinary corrupt stages."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        ValueError.__init__(
            self, f"stored result {path} is unusable ({reason}); lossbarcode never reads, "
                  "replaces or deletes it: remove it by hand, then 'lossbarcode run' "
                  "recomputes the run"
        )


class FileRefusedError(ValueError):
    """A file that is not read: not a regular file (``special``), a link where none may be,
    or larger than its limit."""

    def __init__(self, path: str | os.PathLike[str], reason: str, special: bool) -> None:
        self.path = Path(path)
        self.reason = reason
        self.special = special
        super().__init__(f"{path} {reason}")


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


def _kind(mode: int) -> str:
    """What a file of this ``st_mode`` is, as a phrase ("a FIFO")."""
    for test, name in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def read_regular_file(path: str | os.PathLike[str], limit: int, *, dir_fd: int | None = None,
                      follow_links: bool = True) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``limit`` bytes.

    Opened without blocking (a FIFO or a device never hangs or streams without end) and, unless
    ``follow_links``, without following a link; ``dir_fd``: ``path`` is relative to that open
    folder. :class:`FileRefusedError` for anything else; ``FileNotFoundError`` if absent.
    """
    flags = os.O_RDONLY | _NONBLOCK | _NOCTTY | (0 if follow_links else _NOFOLLOW)
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except OSError as err:
        if err.errno == errno.ELOOP and not follow_links:
            raise FileRefusedError(path, "is a symbolic link", special=True) from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileRefusedError(path, f"is {_kind(info.st_mode)}, not a regular file",
                                   special=True)
        if info.st_size > limit:
            raise FileRefusedError(path, f"is {info.st_size:,} bytes, more than the limit of "
                                         f"{limit:,}", special=False)
        chunks, size = [], 0
        while chunk := os.read(fd, min(1 << 24, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:  # grew while we read it
                raise FileRefusedError(path, f"is more than the limit of {limit:,} bytes",
                                       special=False)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _too_deep(value: Any, limit: int) -> bool:
    """Whether ``value`` (parsed JSON) nests lists/objects more than ``limit`` deep."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(
            item, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


def parse_json(raw: bytes, allow_constants: bool = False) -> Any:
    """JSON from UTF-8 bytes, nested at most :data:`~lossbarcode.choices.MAX_JSON_DEPTH` deep;
    ``ValueError`` saying why not (NaN/Infinity too, unless ``allow_constants``)."""
    try:
        value = json.loads(raw.decode("utf-8"),
                           **({} if allow_constants else {"parse_constant": _reject_constant}))
    except RecursionError:  # the decoder's own guard against deep nesting
        value = None
        deep = True
    else:
        deep = _too_deep(value, MAX_JSON_DEPTH)
    if deep:
        raise ValueError(f"nested more than {MAX_JSON_DEPTH} levels deep")
    return value


def _record_digest(record: Mapping[str, Any]) -> str:
    """sha256 of a stage record (without its own ``sha256`` key), in a canonical form."""
    body = {key: value for key, value in record.items() if key != "sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_output_path(path: str | os.PathLike[str]) -> int | None:
    """``ValueError`` unless :func:`atomic_write_bytes` can write ``path``: returns its
    ``st_mode`` (links followed), None if it does not exist yet."""
    target = Path(path)
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        if target.is_symlink():
            raise ValueError(f"{target} is a symbolic link to a missing file; give a regular "
                             "file's name") from None
        if not target.parent.is_dir():
            raise ValueError(f"folder {target.parent} does not exist; create it first") from None
        return None
    if stat.S_ISDIR(mode):
        raise ValueError(f"{target} is a directory; give a file name")
    if not (stat.S_ISREG(mode) or stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)):
        raise ValueError(f"{target} is {_kind(mode)}, not a regular file; lossbarcode never "
                         "replaces one: give another file name")
    return mode


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` (an output the user named: ``export``/``sweep --output``).

    A regular file (or a new one) is replaced atomically (temp file next to it, fsync, rename):
    a crash or a full disk leaves the old file intact, never a half-written one; a link to a
    regular file is followed and its target replaced. A character device or a FIFO with a
    reader (``/dev/null``, ``/dev/stdout``) is written into, never replaced. ``ValueError``
    for a directory, a socket, a block device, a FIFO without a reader, a link to nothing or a
    missing folder; ``OSError`` if it cannot be written.
    """
    target = Path(path)
    mode = check_output_path(target)
    if mode is not None and (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)):
        _write_into(target, data)
        return
    real = Path(os.path.realpath(target)) if mode is not None else target
    try:
        folder = os.open(real.parent, os.O_RDONLY | _DIRECTORY)
        try:
            _atomic_write_at(folder, real.name, real, lambda f: f.write(data))
        finally:
            os.close(folder)
    except OSError as err:  # name the file asked for, not the temp file
        raise OSError(err.errno, err.strerror, str(target)) from None


def _write_into(path: Path, data: bytes) -> None:
    """Write ``data`` into a character device or a FIFO by opening it (never replacing it)."""
    try:
        fd = os.open(path, os.O_WRONLY | _NONBLOCK | _NOCTTY)
    except OSError as err:
        if err.errno == errno.ENXIO:  # a FIFO nobody reads: writing would block forever
            raise ValueError(f"{path} is a FIFO that nobody reads; start its reader first or "
                             "give a regular file's name") from None
        raise OSError(err.errno, err.strerror, str(path)) from None
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)):
            raise ValueError(f"{path} changed while it was opened; try again")
        os.set_blocking(fd, True)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(path)) from None
    finally:
        os.close(fd)


def _check_replaceable(folder: int, name: str, path: Path) -> None:
    """``ValueError`` unless ``name`` in the open ``folder`` is absent, a regular file or a
    link (renaming over a link replaces the link, never its target)."""
    try:
        mode = os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        raise ValueError(f"{path} is {_kind(mode)}, not a regular file; lossbarcode never "
                         "replaces one: remove it by hand or give another name")


def _atomic_write_at(folder: int, name: str, path: Path, write: Callable[[IO[bytes]], None],
                     digest: bool = False) -> str | None:
    """Write ``name`` in the open ``folder`` atomically (``path``: its name in messages);
    returns the sha256 of what was written when ``digest``."""
    # Temp name starts with "." and ends with ".tmp", so it is never mistaken for a stage.
    tmp = f".{name}.{secrets.token_hex(8)}.tmp"
    # os.open with 0o666 honours the umask (mkstemp would force 0o600 on a shared folder).
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o666, dir_fd=folder)
    sha = None
    try:
        with os.fdopen(fd, "w+b") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
            if digest:
                f.seek(0)
                hasher = hashlib.sha256()
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    hasher.update(chunk)
                sha = hasher.hexdigest()
        _check_replaceable(folder, name, path)
        os.replace(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=folder)
        if isinstance(err, OSError) and err.errno is not None:  # e.g. a full disk: say where
            raise OSError(err.errno, err.strerror, str(path)) from None
        raise
    with contextlib.suppress(OSError):  # makes the rename durable; not possible everywhere
        os.fsync(folder)
    return sha


def _atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """:func:`_atomic_write_at` by path (the folder's last component not a link)."""
    folder = os.open(path.parent, os.O_RDONLY | _DIRECTORY | _NOFOLLOW)
    try:
        _atomic_write_at(folder, path.name, path, write)
    finally:
        os.close(folder)


def _write_npz(f: IO[bytes], arrays: dict[str, np.ndarray]) -> None:
    # Same layout as np.savez, but written by hand so any array name is allowed (np.savez
    # reserves "file"/"allow_pickle") and pickling is refused at write time too.
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, array in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def _check_lock_file(path: Path) -> None:
    """Create the lock file if needed and check that it, and its folder, are no link and no
    special file: locking opens it for writing (and truncates it)."""
    if os.path.islink(path.parent) or not path.parent.is_dir():
        raise ValueError(f"lock folder {path.parent} is a symbolic link or not a folder; "
                         "lossbarcode never locks through one: remove it by hand")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _NONBLOCK | _NOCTTY, 0o666)
    except OSError as err:
        if err.errno != errno.ELOOP:
            raise
        raise ValueError(f"lock file {path} is a symbolic link; lossbarcode never locks "
                         "through one: remove it by hand") from None
    try:
        mode = os.fstat(fd).st_mode
    finally:
        os.close(fd)
    if not stat.S_ISREG(mode):
        raise ValueError(f"lock file {path} is {_kind(mode)}, not a regular file: remove it "
                         "by hand")


def copy_results(source: str | os.PathLike[str], target: str | os.PathLike[str],
                 limit: int = MAX_DEMO_COPY_BYTES) -> list[str]:
    """Copy the run folders of the results folder ``source`` into a new folder ``target``:
    regular files only, read as the store reads them (no links followed, nothing that
    blocks, at most ``limit`` bytes in all). Returns what it left out, one phrase each (a
    link, a special file, a file over the limit); the copy's stages are verified on load as
    any stage is."""
    source, target = Path(source), Path(target)
    target.mkdir(parents=True)
    skipped, total = [], 0
    for run in sorted(os.scandir(source), key=lambda e: e.name):
        if not _NAME.fullmatch(run.name):
            continue  # .locks, .trash-*, stray files
        if not run.is_dir(follow_symlinks=False):
            skipped.append(f"{run.path} ({_kind(run.stat(follow_symlinks=False).st_mode)})")
            continue
        (target / run.name).mkdir()
        for entry in sorted(os.scandir(run.path), key=lambda e: e.name):
            try:
                data = read_regular_file(entry.path, limit - total, follow_links=False)
            except (FileRefusedError, OSError) as err:
                skipped.append(f"{entry.path} ({getattr(err, 'reason', None) or err})")
                continue
            total += len(data)
            (target / run.name / entry.name).write_bytes(data)
    return skipped


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

    @contextlib.contextmanager
    def _open_run(self, run_id: str, create: bool = False) -> Iterator[int | None]:
        """The run folder, opened without following a link (None if absent and not
        ``create``), after checking that it holds regular files only: every read and write of
        a run goes through this descriptor, so a folder swapped for a link meanwhile is never
        written through. :class:`UnsafeResultError` for a link or anything but a regular file
        in it."""
        run_dir = self._run_dir(run_id)
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.mkdir(run_dir)
        try:
            fd = os.open(run_dir, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _NONBLOCK)
        except FileNotFoundError:
            if create:
                raise
            fd = None
        except OSError as err:
            if err.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            try:
                kind = _kind(os.lstat(run_dir).st_mode)
            except OSError:
                kind = "not a folder"
            raise UnsafeResultError(run_dir, f"the run folder is {kind}") from None
        if fd is None:
            yield None
            return
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    if not entry.is_file(follow_symlinks=False):
                        kind = _kind(entry.stat(follow_symlinks=False).st_mode)
                        raise UnsafeResultError(run_dir / entry.name, f"is {kind}; a run folder "
                                                "holds regular files only")
            yield fd
        finally:
            os.close(fd)

    @staticmethod
    def _read(folder: int, path: Path, limit: int) -> bytes:
        """A stage file's bytes (FileNotFoundError if absent); a file that is too large is
        corrupt, anything but a regular file unsafe."""
        try:
            return read_regular_file(path.name, limit, dir_fd=folder, follow_links=False)
        except FileRefusedError as err:
            error = UnsafeResultError if err.special else CorruptResultError
            raise error(path, err.reason) from None

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
        Raises ValueError on invalid input, before anything is written
        (:class:`UnsafeResultError` for a run folder that is a link or holds anything but
        regular files).
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

        with self._open_run(run_id, create=True) as folder:
            assert folder is not None
            # Drop the old JSON first: if we crash below, the stage reads as absent
            # (recomputed) rather than as the old JSON pointing at a half-replaced .npz.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(json_path.name, dir_fd=folder)
                with contextlib.suppress(OSError):
                    os.fsync(folder)
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
                digest = _atomic_write_at(folder, npz_path.name, npz_path,
                                          lambda f: _write_npz(f, checked), digest=True)
                record["arrays"] = {"names": list(checked), "sha256": digest}
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(npz_path.name, dir_fd=folder)
            record["meta"] = meta
            record["sha256"] = _record_digest(record)
            text = json.dumps(record, allow_nan=False, indent=2) + "\n"
            _atomic_write_at(folder, json_path.name, json_path,
                             lambda f: f.write(text.encode("utf-8")))

    def load_stage(
        self, run_id: str, stage: str
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        """Return ``(meta, arrays)`` of a stage, or None if it was never (fully) saved.

        Raises CorruptResultError if the stage is present but truncated, edited, written by
        an older format version, too large, or holds anything that would need pickle to read
        (:class:`UnsafeResultError` if its run folder is a link or holds anything but regular
        files); NewerFormatError if a newer lossbarcode wrote it. Never changes any file.
        """
        json_path, npz_path = self._paths(run_id, stage)
        with self._open_run(run_id) as folder:
            if folder is None:
                return None
            record = self._record_at(folder, run_id, stage)
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
                data = self._read(folder, npz_path, MAX_ARRAYS_BYTES)
            except FileNotFoundError:
                raise CorruptResultError(npz_path, "the .npz file is missing") from None
        if hashlib.sha256(data).hexdigest() != spec["sha256"]:
            raise CorruptResultError(npz_path, "sha256 mismatch: truncated or modified")
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                # Written uncompressed: a compressed member could unpack to any size.
                if any(info.compress_type != zipfile.ZIP_STORED for info in zf.infolist()):
                    raise CorruptResultError(npz_path, "compressed arrays (lossbarcode "
                                                       "stores them uncompressed)")
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
        except CorruptResultError:
            raise
        except Exception as exc:  # any failure to parse these bytes means corrupt
            raise CorruptResultError(npz_path, f"unreadable arrays: {exc}") from None
        if sorted(arrays) != sorted(spec["names"]):
            raise CorruptResultError(npz_path, "array names differ from the JSON record")
        if not all(isinstance(a, np.ndarray) and not a.dtype.hasobject for a in arrays.values()):
            raise CorruptResultError(npz_path, "contains a non-array or object member")
        return meta, {name: arrays[name] for name in spec["names"]}

    def _parsed(self, folder: int, run_id: str, stage: str) -> Any:
        """A stage's JSON, parsed; FileNotFoundError if absent, CorruptResultError if
        unreadable."""
        json_path, _ = self._paths(run_id, stage)
        raw = self._read(folder, json_path, MAX_JSON_BYTES)
        try:
            return parse_json(raw)
        except ValueError as exc:  # includes UnicodeDecodeError and JSONDecodeError
            raise CorruptResultError(json_path, f"unreadable JSON: {exc}") from None

    def _record(self, run_id: str, stage: str) -> dict[str, Any] | None:
        """The verified JSON record of a stage (None if absent); CorruptResultError /
        NewerFormatError as :meth:`load_stage`. Its ``.npz`` is not read."""
        with self._open_run(run_id) as folder:
            return None if folder is None else self._record_at(folder, run_id, stage)

    def _record_at(self, folder: int, run_id: str, stage: str) -> dict[str, Any] | None:
        json_path, _ = self._paths(run_id, stage)
        try:
            record = self._parsed(folder, run_id, stage)
        except FileNotFoundError:
            return None
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
        never dropped: :class:`NewerFormatError` propagates, and so does
        :class:`UnsafeResultError` (a link or a special file is never deleted)."""
        if not self.holds_lock(run_id):
            raise RuntimeError(f"load_or_drop({run_id!r}, {stage!r}) needs the run's lock; "
                               "use read() to read without it")
        try:
            return self.load_stage(run_id, stage)
        except UnsafeResultError:
            raise  # never dropped: whatever it is, it is not ours to delete
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
        try:
            with self._open_run(run_id) as folder:
                record = None if folder is None else self._parsed(folder, run_id, stage)
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
        except CorruptResultError as err:
            # Nobody else can be writing it, or no writer ever makes what it found.
            if self.holds_lock(run_id) or isinstance(err, UnsafeResultError):
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
                warnings.warn(str(err) if isinstance(err, UnsafeResultError) else
                              f"{err.path} is unusable ({err.reason}); 'lossbarcode run' "
                              "recomputes it", RuntimeWarning, stacklevel=4)
            return None

    def has_temp(self, run_id: str) -> bool:
        """Whether a crash mid-write left temp files in the run's folder."""
        run_dir = self._run_dir(run_id)
        try:
            with os.scandir(run_dir) as entries:
                return any(_TEMP.fullmatch(entry.name) for entry in entries)
        except OSError:  # absent, or not a folder (reading it says why)
            return False

    def clean_temp(self, run_id: str) -> list[str]:
        """Remove the temp files a crash mid-write left in a run's folder; returns their names.
        Call it holding the run's lock (every writer of a run holds it)."""
        if not self.holds_lock(run_id):
            raise RuntimeError(f"clean_temp({run_id!r}) needs the run's lock")
        removed = []
        with self._open_run(run_id) as folder:
            if folder is None:
                return removed
            for name in os.listdir(folder):
                if _TEMP.fullmatch(name):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(name, dir_fd=folder)
                    removed.append(name)
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
        """Remove one stage's files (no error if absent). The JSON goes first.
        :class:`UnsafeResultError` (nothing removed) if the run folder is a link or holds
        anything but regular files."""
        json_path, npz_path = self._paths(run_id, stage)
        with self._open_run(run_id) as folder:
            if folder is None:
                return
            for path in (json_path, npz_path):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path.name, dir_fd=folder)

    def delete(self, run_id: str) -> None:
        """Remove a run and all its stages (no error if absent); :class:`UnsafeResultError`
        (nothing removed) if its folder is a link or holds anything but regular files."""
        run_dir = self._run_dir(run_id)
        with self._open_run(run_id):
            pass
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
            info = parse_json(read_regular_file(info_path, MAX_LOCK_INFO_BYTES,
                                                follow_links=False))
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
            _check_lock_file(path)
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
