"""Tests for seg_edge_node.spool.DiskSpool: FIFO order, persistence, caps, corruption,
kill -9 during writes, disk full (simulated, and real on a 1 MiB tmpfs when mounting
is permitted) and a producer/sender pair of threads.

    PYTHONPATH=ros2_ws/src/seg_edge_node .venv/bin/python -m pytest tests/unit/test_spool.py -q
"""
from __future__ import annotations

import errno
import inspect
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import seg_edge_node
from seg_edge_node.spool import HEADER, CorruptEntryError, DiskSpool, SpoolError

PACKAGE_ROOT = Path(seg_edge_node.__file__).resolve().parents[1]


def payload_for(key: str) -> bytes:
    """Deterministic content of 1-20 kB that a reader can check against the key."""
    n = int(key.rsplit("-", 1)[-1])
    return (key.encode() + b"|") * (100 + (n * 7919) % 1900)


def spool_files(directory: Path) -> tuple[list[str], list[str]]:
    names = sorted(os.listdir(directory))
    return [n for n in names if n.endswith(".seg")], [n for n in names if n.endswith(".tmp")]


def key_of(entry_id: str) -> str:
    return entry_id.split("-", 1)[1]


@pytest.fixture
def spool_dir(tmp_path):
    return tmp_path / "spool"


def test_fifo_order_read_and_stats(spool_dir):
    with DiskSpool(spool_dir, max_bytes=10_000_000) as s:
        ids = [s.put(payload_for(f"f-{i}"), f"f-{i}") for i in range(10)]
        assert ids == sorted(ids)
        assert list(s) == ids
        assert s.oldest() == ids[:1]
        assert s.oldest(3) == ids[:3]
        assert [key_of(i) for i in ids] == [f"f-{i}" for i in range(10)]
        assert all(s.read(i) == payload_for(key_of(i)) for i in ids)
        assert len(s) == 10
        assert s.bytes_used == sum(HEADER.size + len(payload_for(f"f-{i}")) for i in range(10))
        assert s.stats()["entries"] == 10 and s.stats()["bytes_used"] == s.bytes_used
        assert spool_files(spool_dir)[0] == [i + ".seg" for i in ids]


def test_unsafe_key_is_kept_readable_in_the_name(spool_dir):
    with DiskSpool(spool_dir, max_bytes=1_000_000) as s:
        entry = s.put(b"x", "../robot 1/frame:7")
        assert key_of(entry) == ".._robot_1_frame_7"
        assert sorted(os.listdir(spool_dir)) == [".lock", entry + ".seg"]
        assert s.read(entry) == b"x"


def test_remove_is_idempotent_and_unknown_ids_are_key_errors(spool_dir):
    with DiskSpool(spool_dir, max_bytes=1_000_000) as s:
        a, b = s.put(b"a", "a"), s.put(b"b", "b")
        assert s.remove(a) is True
        assert s.remove(a) is False
        assert list(s) == [b] and s.bytes_used == HEADER.size + 1
        with pytest.raises(KeyError):
            s.read(a)
        with pytest.raises(KeyError):
            s.read("0000000000000099-nope")
        assert spool_files(spool_dir)[0] == [b + ".seg"]


def test_persistence_across_reopen_continues_the_sequence(spool_dir):
    with DiskSpool(spool_dir, max_bytes=10_000_000) as s:
        first = [s.put(payload_for(f"k-{i}"), f"k-{i}") for i in range(5)]
        s.remove(first[0])
    with DiskSpool(spool_dir, max_bytes=10_000_000) as s:
        assert list(s) == first[1:]
        assert s.stats()["recovered_on_start"] == 4
        assert all(s.read(i) == payload_for(key_of(i)) for i in first[1:])
        later = s.put(payload_for("k-5"), "k-5")
        assert later > first[-1] and list(s) == first[1:] + [later]
    # Numbering continues after the highest surviving name, whatever was removed before it.
    with DiskSpool(spool_dir, max_bytes=10_000_000) as s:
        assert list(s) == first[1:] + [later]
        for entry in first[1:]:
            s.remove(entry)
    with DiskSpool(spool_dir, max_bytes=10_000_000) as s:
        assert list(s) == [later] and s.put(b"n", "k-6") > later


def test_second_spool_on_the_same_directory_is_refused(spool_dir):
    with DiskSpool(spool_dir, max_bytes=1_000_000):
        with pytest.raises(SpoolError, match="in use"):
            DiskSpool(spool_dir, max_bytes=1_000_000)
    DiskSpool(spool_dir, max_bytes=1_000_000).close()


def test_byte_cap_drops_oldest_and_counts(spool_dir):
    entry = HEADER.size + 1000
    with DiskSpool(spool_dir, max_bytes=3 * entry + 10) as s:
        ids = [s.put(bytes([i]) * 1000, f"b-{i}") for i in range(5)]
        assert list(s) == ids[2:]
        assert s.dropped_oldest == 2 and s.dropped_bytes == 2 * entry
        assert s.bytes_used == 3 * entry <= s.max_bytes
        assert spool_files(spool_dir)[0] == [i + ".seg" for i in ids[2:]]
        # A bigger payload drops as many old entries as it needs.
        big = s.put(b"z" * 2000, "big")
        assert list(s) == [ids[4], big] and s.dropped_oldest == 4


def test_count_cap_drops_oldest_and_counts(spool_dir):
    with DiskSpool(spool_dir, max_bytes=10_000_000, max_items=3) as s:
        ids = [s.put(b"p", f"c-{i}") for i in range(7)]
        assert list(s) == ids[-3:]
        assert s.stats()["dropped_oldest"] == 4 and s.stats()["dropped_bytes"] == 4 * (HEADER.size + 1)


def test_lowered_caps_apply_on_reopen(spool_dir):
    with DiskSpool(spool_dir, max_bytes=10_000_000) as s:
        ids = [s.put(b"p", f"c-{i}") for i in range(5)]
    with DiskSpool(spool_dir, max_bytes=10_000_000, max_items=2) as s:
        assert list(s) == ids[-2:] and s.dropped_oldest == 3


def test_oversize_payload_is_rejected_and_counted(spool_dir):
    with DiskSpool(spool_dir, max_bytes=1000) as s:
        keep = s.put(b"k" * 10, "keep")
        with pytest.raises(SpoolError, match="can never fit"):
            s.put(b"x" * 1000, "huge")  # the header does not fit either
        assert s.rejected_oversize == 1
        assert list(s) == [keep] and s.dropped_oldest == 0
        s.put(b"y" * (1000 - HEADER.size), "exact")  # exactly max_bytes fits
        assert len(s) == 1 and s.dropped_oldest == 1


def test_invalid_limits_are_rejected(spool_dir):
    with pytest.raises(ValueError, match="max_bytes"):
        DiskSpool(spool_dir, max_bytes=HEADER.size)
    with pytest.raises(ValueError, match="max_items"):
        DiskSpool(spool_dir, max_bytes=1000, max_items=0)


def _corrupt(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(data[:len(data) // 2])
    elif how == "truncate_header":
        path.write_bytes(data[:5])
    elif how == "flip_payload":
        data[-3] ^= 0x40
        path.write_bytes(data)
    elif how == "flip_length":
        data[6] ^= 0x01
        path.write_bytes(data)
    elif how == "flip_magic":
        data[0] ^= 0x01
        path.write_bytes(data)


@pytest.mark.parametrize("how", ["truncate", "truncate_header", "flip_length", "flip_magic"])
def test_corrupt_entry_found_on_start_is_discarded(spool_dir, how):
    with DiskSpool(spool_dir, max_bytes=1_000_000) as s:
        ids = [s.put(payload_for(f"c-{i}"), f"c-{i}") for i in range(3)]
    _corrupt(spool_dir / (ids[1] + ".seg"), how)
    with DiskSpool(spool_dir, max_bytes=1_000_000) as s:
        assert list(s) == [ids[0], ids[2]]
        assert s.discarded_corrupt == 1 and s.recovered_on_start == 2
        assert [s.read(i) for i in s] == [payload_for("c-0"), payload_for("c-2")]
        assert not (spool_dir / (ids[1] + ".seg")).exists()
        assert s.put(b"n", "n") > ids[2]


@pytest.mark.parametrize("how", ["flip_payload", "truncate"])
def test_corrupt_entry_found_on_read_is_discarded(spool_dir, how):
    with DiskSpool(spool_dir, max_bytes=1_000_000) as s:
        ids = [s.put(payload_for(f"c-{i}"), f"c-{i}") for i in range(3)]
        size_before = s.bytes_used
        _corrupt(spool_dir / (ids[1] + ".seg"), how)  # e.g. a disk fault after start-up
        assert s.read(ids[0]) == payload_for("c-0")
        with pytest.raises(CorruptEntryError):
            s.read(ids[1])
        assert s.discarded_corrupt == 1
        assert list(s) == [ids[0], ids[2]]
        assert s.bytes_used == size_before - HEADER.size - len(payload_for("c-1"))
        with pytest.raises(KeyError):
            s.read(ids[1])
        assert s.read(ids[2]) == payload_for("c-2")


def test_leftover_temp_files_are_removed_on_start(spool_dir):
    with DiskSpool(spool_dir, max_bytes=1_000_000) as s:
        kept = s.put(b"kept", "kept")
    (spool_dir / "0000000000000002-half.seg.tmp").write_bytes(b"SSP1 partial")
    (spool_dir / "0000000000000003-empty.seg.tmp").write_bytes(b"")
    with DiskSpool(spool_dir, max_bytes=1_000_000) as s:
        assert list(s) == [kept] and s.stats()["temp_files_removed"] == 2
        assert spool_files(spool_dir) == ([kept + ".seg"], [])


def test_concurrent_producer_and_sender(spool_dir):
    n = 200
    received: list[str] = []
    errors: list[BaseException] = []
    done = threading.Event()
    s = DiskSpool(spool_dir, max_bytes=10_000_000, max_items=25)

    def producer():
        try:
            for i in range(n):
                s.put(payload_for(f"t-{i}"), f"t-{i}")
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)
        finally:
            done.set()

    def sender():
        try:
            while not (done.is_set() and len(s) == 0):
                batch = s.oldest(5)
                if not batch:
                    time.sleep(0.001)
                for entry in batch:
                    try:
                        data = s.read(entry)
                    except KeyError:
                        continue  # dropped by the producer while we looked at it
                    assert data == payload_for(key_of(entry))
                    received.append(key_of(entry))
                    s.remove(entry)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=producer), threading.Thread(target=sender)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    s.close()
    assert not errors, errors
    indices = [int(k.split("-")[1]) for k in received]
    assert indices == sorted(set(indices)), "sent out of FIFO order or twice"
    assert len(received) + s.dropped_oldest == n
    assert s.bytes_used == 0 and spool_files(spool_dir) == ([], [])


# ---------------------------------------------------------------------------------------
# kill -9 in the middle of writes
# ---------------------------------------------------------------------------------------
WRITER = textwrap.dedent("""
    import sys
    from seg_edge_node.spool import DiskSpool
    {payload_for}
    spool = DiskSpool(sys.argv[1], max_bytes=400_000, max_items=30)
    round_ = int(sys.argv[2])
    print("ready", flush=True)
    i = 0
    while True:
        key = f"r{{round_:02d}}-{{i}}"
        spool.put(payload_for(key), key)
        if i % 3 == 0 and len(spool) > 5:
            spool.remove(spool.oldest()[0])
        i += 1
""")


def test_kill_9_during_writes_leaves_a_consistent_spool(spool_dir):
    script = WRITER.format(payload_for=inspect.getsource(payload_for))
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)}
    rng = random.Random(1234)
    for round_ in range(8):
        proc = subprocess.Popen([sys.executable, "-c", script, str(spool_dir), str(round_)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
            threading.Event().wait(rng.uniform(0.02, 0.4))
            assert proc.poll() is None, proc.stderr.read()
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            proc.stdout.close()
            proc.stderr.close()

        with DiskSpool(spool_dir, max_bytes=400_000, max_items=30) as s:
            ids = list(s)
            assert spool_files(spool_dir) == ([i + ".seg" for i in ids], [])
            for entry in ids:
                try:
                    assert s.read(entry) == payload_for(key_of(entry))
                except CorruptEntryError:
                    pass  # allowed by contract; the atomic rename should make it never happen
            keys = [key_of(i) for i in s]
            order = [(int(k[1:3]), int(k.split("-")[1])) for k in keys]
            assert order == sorted(order) and len(set(order)) == len(order)
            assert s.discarded_corrupt == 0
    assert len(ids) > 0


# ---------------------------------------------------------------------------------------
# disk full
# ---------------------------------------------------------------------------------------
class FailingCalls:
    """Replaces an os function: the next `n` calls raise OSError(err), later ones pass."""

    def __init__(self, real, n: int, err: int = errno.ENOSPC):
        self.real, self.n, self.err, self.calls = real, n, err, 0

    def __call__(self, *args):
        self.calls += 1
        if self.n > 0:
            self.n -= 1
            raise OSError(self.err, os.strerror(self.err))
        return self.real(*args)


def test_disk_full_drops_oldest_and_retries(spool_dir, monkeypatch):
    with DiskSpool(spool_dir, max_bytes=10_000_000, max_items=5) as s:
        ids = [s.put(payload_for(f"d-{i}"), f"d-{i}") for i in range(5)]
        monkeypatch.setattr(os, "write", FailingCalls(os.write, 2))
        new = s.put(payload_for("d-5"), "d-5")
        monkeypatch.undo()
        # One dropped for the count cap, two more to free disk space.
        assert list(s) == ids[3:] + [new]
        assert s.dropped_oldest == 3 and s.write_failures == 0
        assert spool_files(spool_dir) == ([i + ".seg" for i in s], [])
        assert all(s.read(i) == payload_for(key_of(i)) for i in s)


@pytest.mark.parametrize("failing", ["write", "fsync"])
def test_disk_full_that_persists_fails_the_put_cleanly_and_recovers(spool_dir, monkeypatch, failing):
    with DiskSpool(spool_dir, max_bytes=10_000_000, max_items=8, space_retries=3) as s:
        ids = [s.put(payload_for(f"d-{i}"), f"d-{i}") for i in range(8)]
        monkeypatch.setattr(os, failing, FailingCalls(getattr(os, failing), 10**9))
        with pytest.raises(SpoolError, match="No space left on device.*after dropping 3 old entries"):
            s.put(payload_for("d-8"), "d-8")
        with pytest.raises(SpoolError):
            s.put(payload_for("d-9"), "d-9")
        monkeypatch.undo()
        assert s.write_failures == 2
        # The first put dropped 1 for the count cap and 3 while retrying, the second 3.
        assert s.dropped_oldest == 7 and list(s) == ids[7:]
        assert spool_files(spool_dir) == ([ids[7] + ".seg"], [])
        # Space is back: the spool works as before, sequence intact.
        after = [s.put(payload_for(f"d-{i}"), f"d-{i}") for i in range(10, 13)]
        assert list(s) == ids[7:] + after and after[0] > ids[-1]
        assert all(s.read(i) == payload_for(key_of(i)) for i in s)
    with DiskSpool(spool_dir, max_bytes=10_000_000) as s:
        assert list(s) == ids[7:] + after


def test_disk_full_keeps_what_it_did_not_need_to_drop(spool_dir, monkeypatch):
    with DiskSpool(spool_dir, max_bytes=10_000_000, space_retries=2) as s:
        ids = [s.put(payload_for(f"d-{i}"), f"d-{i}") for i in range(6)]
        monkeypatch.setattr(os, "write", FailingCalls(os.write, 10**9))
        with pytest.raises(SpoolError):
            s.put(payload_for("d-6"), "d-6")
        monkeypatch.undo()
        assert list(s) == ids[2:] and s.dropped_oldest == 2
        assert all(s.read(i) == payload_for(key_of(i)) for i in s)


def test_other_io_errors_fail_without_dropping_data(spool_dir, monkeypatch):
    with DiskSpool(spool_dir, max_bytes=10_000_000) as s:
        ids = [s.put(b"p", f"e-{i}") for i in range(3)]
        monkeypatch.setattr(os, "write", FailingCalls(os.write, 1, errno.EIO))
        with pytest.raises(SpoolError, match="Input/output error"):
            s.put(b"q", "e-3")
        monkeypatch.undo()
        assert list(s) == ids and s.dropped_oldest == 0 and s.write_failures == 1
        assert spool_files(spool_dir) == ([i + ".seg" for i in ids], [])


@pytest.fixture
def tiny_fs(tmp_path):
    """A real 1 MiB filesystem (tmpfs); skipped where mounting is not permitted."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                           capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"cannot run mount: {e}")
    if r.returncode != 0:
        pytest.skip(f"mount -t tmpfs not permitted here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True, timeout=30)


def test_real_disk_full_on_a_tiny_tmpfs(tiny_fs):
    directory = tiny_fs / "spool"
    payload = lambda i: bytes([i % 256]) * 100_000  # noqa: E731
    # max_bytes far above the filesystem's size: only the disk can be full.
    with DiskSpool(directory, max_bytes=50_000_000) as s:
        ids = [s.put(payload(i), f"t-{i}") for i in range(30)]
        assert s.dropped_oldest > 0 and s.write_failures == 0
        assert list(s) == ids[s.dropped_oldest:]
        assert all(s.read(i) == payload(int(key_of(i)[2:])) for i in s)
        assert s.bytes_used <= 1024 * 1024

        # A payload larger than the whole filesystem: bounded retries, then a clear error.
        before = len(s)
        with pytest.raises(SpoolError, match="No space left on device"):
            s.put(b"x" * 2_000_000, "too-big-for-disk")
        assert s.write_failures == 1 and len(s) == before - s.space_retries
        assert spool_files(directory)[1] == []
        assert all(s.read(i) == payload(int(key_of(i)[2:])) for i in s)

        # Space is still usable afterwards.
        last = s.put(payload(99), "t-99")
        assert list(s)[-1] == last and s.read(last) == payload(99)
        kept = list(s)
    with DiskSpool(directory, max_bytes=50_000_000) as s:
        assert list(s) == kept and s.discarded_corrupt == 0
