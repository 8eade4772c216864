"""Writing files so that they survive a kill or a power cut: complete or absent, never partial.

Shared by the edge node's spool, the cloud bridge's sample store and the TensorRT engine
cache. A rename is only durable once the directory holding it is fsynced, and a new
directory only once its parent is: an fsynced file in a directory whose own entry was
lost is lost too.
"""
from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

__all__ = ["TEMP_SUFFIX", "fsync_dir", "makedirs_durable", "write_atomic"]

# Every temp file write_atomic creates ends in this: a directory scan can tell a write
# interrupted by a kill (where no clean-up ran) from a finished file.
TEMP_SUFFIX = ".tmp"
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)  # absent on Windows
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def fsync_dir(directory: str | os.PathLike, *, best_effort: bool = False) -> None:
    """fsync a directory, so the entries created or renamed in it survive a power cut.

    Errors propagate unless `best_effort`, which ignores them: directories cannot be
    fsynced everywhere (e.g. Windows), and the files' data is already synced.
    """
    try:
        fd = os.open(directory, os.O_RDONLY | _O_DIRECTORY)
    except OSError:
        if best_effort:
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not best_effort:
            raise
    finally:
        os.close(fd)


def makedirs_durable(directory: str | os.PathLike) -> None:
    """Create `directory` and its missing parents, fsyncing each parent so the new
    entries survive a power cut (an fsynced file in a lost directory is lost too)."""
    missing = []
    path = Path(directory).absolute()
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for path in reversed(missing):
        path.mkdir(exist_ok=True)  # another writer may create it at the same time
        fsync_dir(path.parent)


def write_atomic(path: str | os.PathLike, data: bytes | Iterable[bytes], *, sync_dir: bool = True,
                 mode: int = 0o666) -> None:
    """Write `data` (bytes, or chunks written one after the other) to `path` so that
    readers, and the disk after a kill or a power cut, see the old file or the whole
    new one.

    The temp file `.<name>.<random>.tmp` lives in the same directory (os.replace is only
    atomic within one filesystem), has a name of its own (concurrent writers of one path
    never share a temp file) and is fsynced before the rename. With `sync_dir` the
    directory is fsynced after it, so the rename itself survives a power cut; without,
    the caller does that (e.g. once for several files). The parent directory must
    exist. `mode` is the new file's permissions before the umask, as for open().

    On any error the temp file is removed and the exception propagates unchanged (an
    OSError keeps its errno: callers tell a full disk from an I/O error). An error from
    the directory fsync comes after the rename: `path` then holds the new data, which
    may not survive a power cut.
    """
    path = Path(path)
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = (data,)
    fd, tmp = _create_temp(path, mode)
    try:
        try:
            for chunk in data:
                _write_all(fd, chunk)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # the original error matters more; a leftover *.tmp is recognisable
        raise
    if sync_dir:
        fsync_dir(path.parent)


def _create_temp(path: Path, mode: int) -> tuple[int, Path]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
        try:
            return os.open(tmp, flags, mode), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no unused temp file name for {path}")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks (model files are hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()
