"""durable_files: atomic writes (old or new content, never partial; no temp file left on
error; errno intact) and the directory fsyncs that make them survive a power cut."""
from __future__ import annotations

import errno
import hashlib
import os
import threading

import numpy as np
import pytest

import durable_files
from durable_files import TEMP_SUFFIX, file_sha256, fsync_dir, makedirs_durable, write_atomic


class Fail:
    """Replaces an os function: raises `exc` on call number `on` (1-based), else passes."""

    def __init__(self, real, exc: BaseException, on: int = 1):
        self.real, self.exc, self.on, self.calls, self.args = real, exc, on, 0, []

    def __call__(self, *args):
        self.calls += 1
        self.args.append(args)
        if self.calls == self.on:
            raise self.exc
        return self.real(*args)


def test_write_creates_and_replaces(tmp_path):
    target = tmp_path / "f.bin"
    write_atomic(target, b"first")
    assert target.read_bytes() == b"first"
    write_atomic(target, [b"sec", memoryview(b"ond"), bytearray(b"!")])  # chunks, in order
    assert target.read_bytes() == b"second!"
    write_atomic(target, b"")
    assert target.read_bytes() == b""
    assert os.listdir(tmp_path) == ["f.bin"]


def test_mode_is_applied(tmp_path):
    old_umask = os.umask(0o022)
    try:
        write_atomic(tmp_path / "private", b"x", mode=0o600)
        write_atomic(tmp_path / "shared", b"x")
    finally:
        os.umask(old_umask)
    assert (tmp_path / "private").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "shared").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("failing, on", [("write", 1), ("write", 2), ("fsync", 1), ("replace", 1)])
@pytest.mark.parametrize("existing", [True, False], ids=["overwrite", "new"])
def test_error_leaves_old_content_no_temp_and_errno(tmp_path, monkeypatch, failing, on, existing):
    target = tmp_path / "f.bin"
    if existing:
        target.write_bytes(b"old content")
    err = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    fake = Fail(getattr(os, failing), err, on)
    monkeypatch.setattr(os, failing, fake)
    with pytest.raises(OSError) as info:
        write_atomic(target, [b"new ", b"content"])
    monkeypatch.undo()
    assert fake.calls == on  # the failure was reached, and nothing was retried after it
    assert info.value is err and info.value.errno == errno.ENOSPC
    assert os.listdir(tmp_path) == (["f.bin"] if existing else [])
    if existing:
        assert target.read_bytes() == b"old content"


def test_interrupt_removes_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    fake = Fail(os.replace, KeyboardInterrupt())
    monkeypatch.setattr(os, "replace", fake)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, b"new")
    monkeypatch.undo()
    temp = fake.args[0][0]
    # The temp file sat beside the target under a hidden, recognisable name.
    assert temp.parent == tmp_path and temp.name.startswith(".f.bin.") and temp.name.endswith(TEMP_SUFFIX)
    assert os.listdir(tmp_path) == ["f.bin"] and target.read_bytes() == b"old"


def test_directory_is_fsynced_after_the_rename_unless_told_not_to(tmp_path, monkeypatch):
    synced = []

    def record(directory, **kwargs):
        synced.append((directory, (tmp_path / "f").read_bytes()))

    monkeypatch.setattr(durable_files, "fsync_dir", record)
    write_atomic(tmp_path / "f", b"a")
    assert synced == [(tmp_path, b"a")]
    write_atomic(tmp_path / "f", b"b", sync_dir=False)
    assert synced == [(tmp_path, b"a")]


def test_directory_fsync_error_comes_after_the_rename(tmp_path, monkeypatch):
    target = tmp_path / "f"

    def fail(directory, **kwargs):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(durable_files, "fsync_dir", fail)
    with pytest.raises(OSError) as info:
        write_atomic(target, b"new")
    assert info.value.errno == errno.EIO
    assert os.listdir(tmp_path) == ["f"] and target.read_bytes() == b"new"


def test_readers_and_concurrent_writers_never_see_a_partial_file(tmp_path):
    target = tmp_path / "f"
    contents = [bytes([i]) * 200_000 for i in range(4)]
    write_atomic(target, contents[0])
    stop = threading.Event()
    seen, errors = set(), []

    def writer(k):
        try:
            for n in range(30):
                write_atomic(target, contents[(k + n) % len(contents)], sync_dir=False)
        except BaseException as e:  # reported below
            errors.append(e)

    def reader():
        while not stop.is_set():
            data = target.read_bytes()
            if data not in contents:
                errors.append(AssertionError(f"partial read: {len(data)} bytes"))
                return
            seen.add(data[:1])

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(3)]
    r = threading.Thread(target=reader)
    r.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    r.join()
    assert not errors, errors
    assert target.read_bytes() in contents and os.listdir(tmp_path) == ["f"]
    assert seen


def test_fsync_dir_errors_propagate_unless_best_effort(tmp_path, monkeypatch):
    fsync_dir(tmp_path)
    with pytest.raises(FileNotFoundError):
        fsync_dir(tmp_path / "missing")
    fsync_dir(tmp_path / "missing", best_effort=True)

    closed = []
    real_close = os.close
    monkeypatch.setattr(os, "close", lambda fd: (closed.append(fd), real_close(fd)))
    monkeypatch.setattr(os, "fsync", Fail(os.fsync, OSError(errno.EIO, "boom"), on=1))
    with pytest.raises(OSError) as info:
        fsync_dir(tmp_path)
    assert info.value.errno == errno.EIO
    monkeypatch.setattr(os, "fsync", Fail(os.fsync, OSError(errno.EINVAL, "unsupported"), on=1))
    fsync_dir(tmp_path, best_effort=True)
    assert len(closed) == 2  # the directory descriptor is closed either way


def test_makedirs_durable_fsyncs_every_new_parent(tmp_path, monkeypatch):
    synced = []
    real = durable_files.fsync_dir
    monkeypatch.setattr(durable_files, "fsync_dir", lambda d, **kw: (synced.append(d), real(d, **kw)))
    target = tmp_path / "a" / "b" / "c"
    makedirs_durable(target)
    assert target.is_dir()
    # Each directory's entry is fsynced in its parent, outermost first.
    assert synced == [tmp_path, tmp_path / "a", tmp_path / "a" / "b"]
    synced.clear()
    makedirs_durable(target)  # already there: nothing to do
    makedirs_durable(str(target))
    assert synced == []


def test_makedirs_durable_refuses_a_file_in_the_way(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(FileExistsError):
        makedirs_durable(tmp_path / "file")
    with pytest.raises(OSError):
        makedirs_durable(tmp_path / "file" / "sub")


def test_file_sha256_streams_the_file(tmp_path):
    path = tmp_path / "m.onnx"
    data = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)  # spans several blocks
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
