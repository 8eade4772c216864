"""A bounded, durable FIFO of opaque payloads on disk: hard frames waiting for the broker.

The broker can be unreachable for hours and the process can be killed at any moment,
so an accepted frame lives on disk until the broker acknowledged it. The robot's disk
is shared, so the spool is bounded: when full the oldest entries go first (the newest
frames matter most to the next model) and every drop is logged and counted.

One file per entry, named `<16-digit sequence>-<key>.seg`, so names sort in FIFO order;
on start the sequence continues after the highest name found. A file is

    b"SSP1" | payload length (u64 LE) | CRC32 of the payload (u32 LE) | payload

It is written as `.<name>.<random>.tmp`, fsynced, renamed to its final name and the
directory is fsynced (durable_files.write_atomic): after a kill or a power cut an entry
is complete or absent, and a file that is not (disk fault, manual edit) fails the length
or CRC check and is deleted and counted, never returned. Leftover `.tmp` files are
deleted on start.

Delivery is at least once: a removal is not fsynced, so after a power cut an entry
already acknowledged may come back and be sent again; the receiver deduplicates by key.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import struct
import threading
import zlib
from collections import OrderedDict
from itertools import islice
from pathlib import Path

from durable_files import TEMP_SUFFIX, makedirs_durable, write_atomic

log = logging.getLogger(__name__)

MAGIC = b"SSP1"
HEADER = struct.Struct("<4sQI")
ENTRY_SUFFIX = ".seg"
LOCK_NAME = ".lock"
_ENTRY_RE = re.compile(r"^(\d{16})-(.*)\.seg$")
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_MAX_KEY_CHARS = 100
# Only these mean "no room": dropping old entries can fix them. Other errors (EIO,
# EACCES, ...) would not be fixed by deleting data, so they fail the put at once.
_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class SpoolError(Exception):
    """A payload could not be stored (too large, disk full, I/O error) or read."""


class CorruptEntryError(SpoolError):
    """An entry failed its length or CRC check; it has been deleted and counted."""


class DiskSpool:
    """Durable bounded FIFO; safe for a producer thread and a sender thread.

    put() stores a payload and returns its entry id; oldest()/iteration list ids in FIFO
    order; read() returns a payload; remove() deletes an entry once the broker
    acknowledged it. An id that was dropped or removed meanwhile reads as KeyError.
    """

    def __init__(self, directory: str | os.PathLike, max_bytes: int, max_items: int | None = None,
                 space_retries: int = 3):
        if max_bytes <= HEADER.size:
            raise ValueError(f"max_bytes must exceed the {HEADER.size}-byte entry header, got {max_bytes}")
        if max_items is not None and max_items < 1:
            raise ValueError(f"max_items must be >= 1 or None, got {max_items}")
        self.directory = Path(directory)
        self.max_bytes = int(max_bytes)
        self.max_items = max_items
        self.space_retries = space_retries
        self._lock = threading.Lock()      # the index and the counters
        self._put_lock = threading.Lock()  # one write in flight, so room made for it stays free
        self._entries: OrderedDict[str, int] = OrderedDict()  # id -> file size, oldest first
        self._bytes = 0
        self._next_seq = 1
        self.dropped_oldest = 0
        self.dropped_bytes = 0
        self.recovered_on_start = 0
        self.discarded_corrupt = 0
        self.temp_files_removed = 0
        self.rejected_oversize = 0
        self.write_failures = 0
        self.unlink_failures = 0
        makedirs_durable(self.directory)
        self._lock_file = _lock_exclusively(self.directory / LOCK_NAME)
        with self._lock:
            self._recover_locked()

    # -- public API ---------------------------------------------------------------------
    def put(self, payload: bytes, key: str) -> str:
        """Store `payload` durably and return its entry id; drops the oldest entries to
        make room. Raises SpoolError if it cannot be stored (the spool stays usable)."""
        size = HEADER.size + len(payload)
        if size > self.max_bytes:
            with self._lock:
                self.rejected_oversize += 1
            raise SpoolError(f"payload for {key!r} is {len(payload)} bytes; with its {HEADER.size}-byte "
                             f"header it can never fit in a spool of max_bytes={self.max_bytes}")
        header = HEADER.pack(MAGIC, len(payload), zlib.crc32(payload))
        with self._put_lock:
            with self._lock:
                entry_id = f"{self._next_seq:016d}-{_safe_key(key)}"
                self._next_seq += 1
                self._make_room(size, 1)
            for attempt in range(self.space_retries + 1):
                try:
                    self._write_entry(entry_id, header, payload)
                    break
                except OSError as e:
                    no_room = e.errno in _SPACE_ERRNOS
                    if no_room and attempt < self.space_retries and self._drop_oldest_entry("disk full"):
                        continue
                    with self._lock:
                        self.write_failures += 1
                    detail = f" (even after dropping {attempt} old entries for it)" if no_room else ""
                    raise SpoolError(f"could not store {entry_id} in {self.directory}: {e}{detail}") from e
            with self._lock:
                self._entries[entry_id] = size
                self._bytes += size
        return entry_id

    def oldest(self, n: int = 1) -> list[str]:
        """Ids of up to `n` oldest entries, oldest first, without removing them."""
        with self._lock:
            return list(islice(self._entries, n))

    def __iter__(self):
        """Ids of all entries, oldest first (a snapshot)."""
        with self._lock:
            return iter(list(self._entries))

    def read(self, entry_id: str) -> bytes:
        """The payload of `entry_id`. KeyError if it is gone; CorruptEntryError if it
        failed its check (the entry is then deleted and counted: skip to the next)."""
        with self._lock:
            if entry_id not in self._entries:
                raise KeyError(entry_id)
        try:
            data = self._path(entry_id).read_bytes()
        except FileNotFoundError:
            raise KeyError(entry_id) from None  # removed or dropped meanwhile
        except OSError as e:
            raise SpoolError(f"cannot read spool entry {entry_id}: {e}") from e
        try:
            return _decode(data)
        except CorruptEntryError as e:
            with self._lock:
                size = self._entries.pop(entry_id, None)
                if size is not None:
                    self._bytes -= size
                    self._discard_corrupt_locked(entry_id, str(e))
            raise

    def remove(self, entry_id: str) -> bool:
        """Delete an entry (the broker has it). Idempotent: False if it was already gone."""
        with self._lock:
            size = self._entries.pop(entry_id, None)
            if size is None:
                return False
            self._bytes -= size
            self._unlink_locked(entry_id)
            return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def bytes_used(self) -> int:
        """Bytes on disk of all entries, headers included (what max_bytes bounds)."""
        with self._lock:
            return self._bytes

    def stats(self) -> dict:
        with self._lock:
            return {
                "entries": len(self._entries),
                "bytes_used": self._bytes,
                "max_bytes": self.max_bytes,
                "max_items": self.max_items,
                "dropped_oldest": self.dropped_oldest,
                "dropped_bytes": self.dropped_bytes,
                "recovered_on_start": self.recovered_on_start,
                "discarded_corrupt": self.discarded_corrupt,
                "temp_files_removed": self.temp_files_removed,
                "rejected_oversize": self.rejected_oversize,
                "write_failures": self.write_failures,
                "unlink_failures": self.unlink_failures,
            }

    def close(self) -> None:
        """Release the directory so another DiskSpool (e.g. after a restart) can open it."""
        self._lock_file.close()

    def __enter__(self) -> DiskSpool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------
    def _path(self, entry_id: str) -> Path:
        return self.directory / (entry_id + ENTRY_SUFFIX)

    def _recover_locked(self) -> None:
        found: list[tuple[int, str]] = []
        for name in os.listdir(self.directory):
            path = self.directory / name
            if name.endswith(TEMP_SUFFIX):
                log.warning("spool %s: deleting %s, left by a write that was interrupted", self.directory, name)
                path.unlink(missing_ok=True)
                self.temp_files_removed += 1
            elif m := _ENTRY_RE.match(name):
                found.append((int(m.group(1)), name[:-len(ENTRY_SUFFIX)]))
            elif name != LOCK_NAME:
                log.warning("spool %s: ignoring unexpected file %s", self.directory, name)
        found.sort()
        for seq, entry_id in found:
            self._next_seq = max(self._next_seq, seq + 1)
            try:
                size = _check_file(self._path(entry_id))
            except CorruptEntryError as e:
                self._discard_corrupt_locked(entry_id, str(e))
                continue
            self._entries[entry_id] = size
            self._bytes += size
        self.recovered_on_start = len(self._entries)
        self._make_room(0, 0)  # the caps may have been lowered since the last run
        if found:
            log.info("spool %s: recovered %d entries (%d bytes), %d corrupt discarded",
                     self.directory, self.recovered_on_start, self._bytes, self.discarded_corrupt)

    def _make_room(self, size: int, items: int) -> None:
        while self._entries and (
                self._bytes + size > self.max_bytes
                or (self.max_items is not None and len(self._entries) + items > self.max_items)):
            self._drop_oldest_locked("spool full")

    def _drop_oldest_entry(self, reason: str) -> bool:
        with self._lock:
            if not self._entries:
                return False
            self._drop_oldest_locked(reason)
            return True

    def _drop_oldest_locked(self, reason: str) -> None:
        entry_id, size = self._entries.popitem(last=False)
        self._bytes -= size
        self.dropped_oldest += 1
        self.dropped_bytes += size
        self._unlink_locked(entry_id)
        log.warning("spool %s: %s, dropped oldest entry %s (%d bytes; %d dropped so far)",
                    self.directory, reason, entry_id, size, self.dropped_oldest)

    def _discard_corrupt_locked(self, entry_id: str, reason: str) -> None:
        self.discarded_corrupt += 1
        self._unlink_locked(entry_id)
        log.warning("spool %s: discarded corrupt entry %s: %s", self.directory, entry_id, reason)

    def _unlink_locked(self, entry_id: str) -> None:
        try:
            self._path(entry_id).unlink(missing_ok=True)
        except OSError as e:
            # The entry is out of the index either way; if the file survives, the next
            # start finds it again (an acknowledged frame is re-sent: the receiver
            # deduplicates by key).
            self.unlink_failures += 1
            log.warning("spool %s: could not delete %s: %s", self.directory, entry_id, e)

    def _write_entry(self, entry_id: str, header: bytes, payload: bytes) -> None:
        final = self._path(entry_id)
        try:
            # OSErrors propagate with their errno: put() tells a full disk from the rest.
            write_atomic(final, (header, payload), mode=0o644)
        except BaseException:
            # Leave nothing half-done behind: the entry is either fully stored or absent.
            # write_atomic removed its temp file; the final one exists if only the
            # directory fsync failed.
            try:
                final.unlink(missing_ok=True)
            except OSError:
                pass
            raise


def _safe_key(key: str) -> str:
    return _UNSAFE_KEY_CHARS.sub("_", str(key))[:_MAX_KEY_CHARS] or "_"


def _check_header(head: bytes, file_size: int) -> int:
    """The payload's CRC32 if `head` is a valid header for a file of `file_size` bytes."""
    if len(head) < HEADER.size:
        raise CorruptEntryError(f"{file_size} bytes, shorter than the header")
    magic, length, crc = HEADER.unpack_from(head)
    if magic != MAGIC:
        raise CorruptEntryError(f"bad magic {magic!r}")
    if file_size != HEADER.size + length:
        raise CorruptEntryError(f"file has {file_size - HEADER.size} payload bytes, header says {length}")
    return crc


def _decode(data: bytes) -> bytes:
    crc = _check_header(data[:HEADER.size], len(data))
    payload = data[HEADER.size:]
    if zlib.crc32(payload) != crc:
        raise CorruptEntryError("payload CRC32 mismatch")
    return payload


def _check_file(path: Path) -> int:
    """Cheap start-up check (header and length, not the CRC: that is verified on read,
    which every entry goes through before it is sent). Returns the file size."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER.size)
            size = os.fstat(f.fileno()).st_size
    except OSError as e:
        raise CorruptEntryError(f"unreadable: {e}") from e
    _check_header(head, size)
    return size


def _lock_exclusively(path: Path):
    """Two spools on one directory would reuse sequence numbers and overwrite each
    other's entries; the lock makes the second one fail loudly instead."""
    f = open(path, "a+b")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise SpoolError(f"spool directory {path.parent} is in use by another DiskSpool") from None
    return f
