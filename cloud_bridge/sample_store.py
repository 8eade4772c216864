"""Durable storage of refined hard samples, keyed by frame uuid.

`SampleStore` is what the bridge (and later the replay buffer for retraining) talks
to; `SqliteSampleStore` is the embedded default. Its layout under the store directory:

    samples.sqlite3     table `samples`: metadata + paths of the pixel files (WAL, synchronous=FULL)
    writers.lock        flock: shared while a writer has files not yet named by a row,
                        exclusive for the orphan clean-up on open
    samples/<uuid[:2]>/<uuid>/rgb.<token>.png        8-bit RGB
                              depth.<token>.png      16-bit millimetres, 0 = invalid
                              edge_labels.<token>.png, labels.<token>.png   8-bit class ids
                              label_confidence.<token>.png   8-bit, 255 = certain, if any
                              raw.<token>.bin        the raw payload, if any

Crash safety: a put writes its files (temp, fsync, rename, directory fsync) before it
commits the row naming them, so a row never points at a missing file; a crash in
between leaves files no row names, and the next open deletes them. Every write uses a
fresh token in its file names, so two writers of the same uuid (two bridge replicas
sharing a store) never touch each other's files: the uuid's UNIQUE constraint picks one
row and the other writer deletes its own files.
"""
from __future__ import annotations

import abc
import contextlib
import fcntl
import json
import logging
import numbers
import os
import re
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from durable_files import fsync_dir, makedirs_durable, write_atomic

log = logging.getLogger(__name__)

LABEL_SOURCES = ("sam", "region", "human", "ground_truth")
FILTERS = ("robot_id", "label_source", "frame_id", "edge_model_version", "mining_policy", "refiner")
# The uuid becomes a directory name: nothing that could climb out of it or hide.
_UUID_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{1,127}$")
_MAX_DEPTH_M = 65.535  # the largest distance a 16-bit millimetre PNG can hold
SCHEMA_VERSION = 2   # 2: label_confidence


class SampleStoreError(Exception):
    """The store cannot do what was asked: an I/O failure, or stored data that is
    missing or unreadable (never raised for a simple miss: those return None/False)."""


class StoreUnavailable(SampleStoreError):
    """The store cannot be reached now (its database is down, restarting, or cut off):
    the same call can succeed later."""


@dataclass(eq=False)  # == on numpy fields has no single truth value
class Sample:
    frame_uuid: str
    robot_id: str
    stamp_ns: int
    frame_id: str
    edge_model_version: str
    mining_policy: str
    mining_score: float
    label_source: str      # one of LABEL_SOURCES
    refiner: str
    received_at: float     # unix time the bridge received the frame
    rgb: np.ndarray        # (H, W, 3) uint8
    depth_m: np.ndarray | None  # (H, W) float metres; stored at 1 mm, invalid -> 0.0
    edge_labels: np.ndarray     # (H, W) uint8, the edge model's labels
    labels: np.ndarray          # (H, W) uint8, the refined (target) labels
    tags: dict[str, str] = field(default_factory=dict)
    raw_payload: bytes | None = None
    # (H, W) uint8, how sure the refiner is of each pixel of `labels` (255 = certain);
    # None for labels without one (human, ground truth). Trainers ignore unsure pixels.
    label_confidence: np.ndarray | None = None


@dataclass(frozen=True)
class SampleInfo:
    """A sample's metadata, without pixels."""
    frame_uuid: str
    robot_id: str
    stamp_ns: int
    frame_id: str
    edge_model_version: str
    mining_policy: str
    mining_score: float
    label_source: str
    refiner: str
    received_at: float
    tags: dict[str, str]
    height: int
    width: int
    has_depth: bool
    has_raw_payload: bool
    has_label_confidence: bool = False


class SampleStore(abc.ABC):
    """Samples keyed by frame uuid. put is idempotent: the first sample stored for a
    uuid stays as it is, so a frame delivered twice (at-least-once uplink) is kept once."""

    @abc.abstractmethod
    def put(self, sample: Sample) -> bool:
        """True if stored, False if the uuid was already stored (nothing changed).
        ValueError for an invalid sample, SampleStoreError if storing failed."""

    @abc.abstractmethod
    def get(self, frame_uuid: str) -> Sample | None: ...

    @abc.abstractmethod
    def __contains__(self, frame_uuid: object) -> bool: ...

    @abc.abstractmethod
    def count(self, **filters: str) -> int:
        """Samples matching all `filters` (keys from FILTERS; None means any)."""

    @abc.abstractmethod
    def list(self, limit: int = 100, offset: int = 0, robot_id: str | None = None,
             label_source: str | None = None) -> list[SampleInfo]:
        """Metadata in the order samples were stored."""

    @abc.abstractmethod
    def update_labels(self, frame_uuid: str, labels: np.ndarray, label_source: str,
                      confidence: np.ndarray | None = None) -> bool:
        """Replace the target labels (e.g. by a human's) and their confidence (None: the new
        labels are taken as certain); False if the uuid is unknown."""

    @abc.abstractmethod
    def delete(self, frame_uuid: str) -> bool:
        """False if the uuid was not stored."""

    def ping(self) -> bool:
        """Whether the store answers now (a readiness probe)."""
        try:
            self.count()
            return True
        except SampleStoreError:
            return False

    def close(self) -> None:
        """Release resources; the store is unusable afterwards."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def validate_sample(s: Sample) -> None:
    """Raise ValueError saying what is wrong with `s`, before anything is written."""
    if not isinstance(s.frame_uuid, str) or not _UUID_RE.match(s.frame_uuid):
        raise ValueError(f"frame_uuid {s.frame_uuid!r} must be 2-128 characters of [A-Za-z0-9._-]")
    for name in ("robot_id", "frame_id", "edge_model_version", "mining_policy", "refiner"):
        if not isinstance(getattr(s, name), str):
            raise ValueError(f"{name} must be a str, got {type(getattr(s, name)).__name__}")
    if not (isinstance(s.stamp_ns, numbers.Integral) and 0 <= s.stamp_ns < 2**63):
        raise ValueError(f"stamp_ns must be an int in [0, 2**63), got {s.stamp_ns!r}")
    for name in ("mining_score", "received_at"):
        if not isinstance(getattr(s, name), numbers.Real):
            raise ValueError(f"{name} must be a number, got {type(getattr(s, name)).__name__}")
    _check_label_source(s.label_source)
    if not (isinstance(s.rgb, np.ndarray) and s.rgb.dtype == np.uint8 and s.rgb.ndim == 3
            and s.rgb.shape[2] == 3 and s.rgb.shape[0] > 0 and s.rgb.shape[1] > 0):
        raise ValueError(f"rgb must be a non-empty (H, W, 3) uint8 array, got {_describe(s.rgb)}")
    hw = s.rgb.shape[:2]
    _check_labels("edge_labels", s.edge_labels, hw)
    _check_labels("labels", s.labels, hw)
    if s.label_confidence is not None:
        _check_labels("label_confidence", s.label_confidence, hw)
    if s.depth_m is not None and not (isinstance(s.depth_m, np.ndarray) and s.depth_m.shape == hw
                                      and np.issubdtype(s.depth_m.dtype, np.floating)):
        raise ValueError(f"depth_m must be None or a float {hw} array, got {_describe(s.depth_m)}")
    if not (isinstance(s.tags, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in s.tags.items())):
        raise ValueError(f"tags must be a dict[str, str], got {s.tags!r}")
    if s.raw_payload is not None and not isinstance(s.raw_payload, (bytes, bytearray, memoryview)):
        raise ValueError(f"raw_payload must be bytes or None, got {type(s.raw_payload).__name__}")


def _check_label_source(label_source: object) -> None:
    if label_source not in LABEL_SOURCES:
        raise ValueError(f"label_source {label_source!r} is not one of {LABEL_SOURCES}")


def _check_labels(name: str, a: object, hw: tuple[int, ...]) -> None:
    if not (isinstance(a, np.ndarray) and a.dtype == np.uint8 and a.shape == hw):
        raise ValueError(f"{name} must be a {hw} uint8 array, got {_describe(a)}")


def _describe(a: object) -> str:
    return f"{a.dtype} array of shape {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__


_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    seq INTEGER PRIMARY KEY,             -- insertion order, stable for paging
    frame_uuid TEXT NOT NULL UNIQUE,
    robot_id TEXT NOT NULL,
    stamp_ns INTEGER NOT NULL,
    frame_id TEXT NOT NULL,
    edge_model_version TEXT NOT NULL,
    mining_policy TEXT NOT NULL,
    mining_score REAL NOT NULL,
    label_source TEXT NOT NULL,
    refiner TEXT NOT NULL,
    received_at REAL NOT NULL,
    tags TEXT NOT NULL,                  -- JSON object
    height INTEGER NOT NULL,
    width INTEGER NOT NULL,
    rgb_path TEXT NOT NULL,              -- file paths relative to the store directory
    depth_path TEXT,
    edge_labels_path TEXT NOT NULL,
    labels_path TEXT NOT NULL,
    raw_path TEXT,
    label_confidence_path TEXT
);
CREATE INDEX IF NOT EXISTS samples_robot_id ON samples(robot_id);
CREATE INDEX IF NOT EXISTS samples_label_source ON samples(label_source);
"""
_META_COLUMNS = ("frame_uuid", "robot_id", "stamp_ns", "frame_id", "edge_model_version", "mining_policy",
                 "mining_score", "label_source", "refiner", "received_at", "tags", "height", "width")
_FILE_COLUMNS = ("rgb_path", "depth_path", "edge_labels_path", "labels_path", "raw_path", "label_confidence_path")
# Schema version -> the statements that bring the version before it up to it.
_MIGRATIONS = {2: ("ALTER TABLE samples ADD COLUMN label_confidence_path TEXT",)}


class SqliteSampleStore(SampleStore):
    """SQLite metadata + PNG files. Safe for several threads and several processes."""

    DB_NAME = "samples.sqlite3"
    LOCK_NAME = "writers.lock"

    def __init__(self, directory: str | os.PathLike, busy_timeout_s: float = 60.0):
        self.directory = Path(directory)
        self.busy_timeout_s = busy_timeout_s
        self._local = threading.local()  # sqlite3 connections must stay in their thread
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()    # the connection list and the counters
        self._closed = False
        self.stored = 0
        self.duplicates = 0
        self.rejected_invalid = 0
        self.write_failures = 0
        self.orphan_files_removed = 0
        makedirs_durable(self.directory / "samples")
        self._create_schema()
        self._remove_orphans()

    # -- SampleStore --------------------------------------------------------------------
    def put(self, sample: Sample) -> bool:
        try:
            validate_sample(sample)
        except ValueError:
            with self._lock:
                self.rejected_invalid += 1
            raise
        if sample.frame_uuid in self:
            with self._lock:
                self.duplicates += 1
            return False
        files = _encode_files(sample)  # before taking the lock: encoding is the slow part
        token = uuid.uuid4().hex[:12]
        rel_dir = Path("samples", sample.frame_uuid[:2], sample.frame_uuid)
        paths = {col: str(rel_dir / f"{stem}.{token}.{ext}") for col, (stem, ext, _) in files.items()}
        with self._writers(fcntl.LOCK_SH):
            self._write_files({paths[col]: data for col, (_, _, data) in files.items()})
            try:
                inserted = self._insert_row(sample, paths)
            except Exception as e:
                self._remove_files(paths.values())
                with self._lock:
                    self.write_failures += 1
                raise SampleStoreError(f"could not store sample {sample.frame_uuid}: {e}") from e
            if not inserted:  # another writer stored this uuid first: its row and files stay
                self._remove_files(paths.values())
        with self._lock:
            if inserted:
                self.stored += 1
            else:
                self.duplicates += 1
        return inserted

    def get(self, frame_uuid: str) -> Sample | None:
        # update_labels may replace a file between reading the row and the file: re-read.
        for _ in range(3):
            row = self._conn().execute(
                f"SELECT {', '.join(_META_COLUMNS + _FILE_COLUMNS)} FROM samples WHERE frame_uuid = ?",
                (frame_uuid,)).fetchone()
            if row is None:
                return None
            try:
                return self._load(row)
            except FileNotFoundError as e:
                missing = e.filename
            except OSError as e:
                raise SampleStoreError(f"sample {frame_uuid}: cannot read {e.filename}: {e}") from e
        raise SampleStoreError(f"sample {frame_uuid}: stored file {missing} is missing")

    def __contains__(self, frame_uuid: object) -> bool:
        return self._conn().execute("SELECT 1 FROM samples WHERE frame_uuid = ?",
                                    (frame_uuid,)).fetchone() is not None

    def count(self, **filters: str) -> int:
        where, args = _where(filters)
        return self._conn().execute(f"SELECT COUNT(*) FROM samples {where}", args).fetchone()[0]

    def list(self, limit: int = 100, offset: int = 0, robot_id: str | None = None,
             label_source: str | None = None) -> list[SampleInfo]:
        if limit < 0 or offset < 0:
            raise ValueError(f"limit and offset must be >= 0, got {limit}, {offset}")
        where, args = _where({"robot_id": robot_id, "label_source": label_source})
        rows = self._conn().execute(
            f"SELECT {', '.join(_META_COLUMNS)}, depth_path IS NOT NULL, raw_path IS NOT NULL, "
            "label_confidence_path IS NOT NULL "
            f"FROM samples {where} ORDER BY seq LIMIT ? OFFSET ?", (*args, limit, offset)).fetchall()
        return [_info(row) for row in rows]

    def update_labels(self, frame_uuid: str, labels: np.ndarray, label_source: str,
                      confidence: np.ndarray | None = None) -> bool:
        _check_label_source(label_source)
        row = self._conn().execute("SELECT height, width FROM samples WHERE frame_uuid = ?",
                                   (frame_uuid,)).fetchone()
        if row is None:
            return False
        _check_labels("labels", labels, tuple(row))
        if confidence is not None:
            _check_labels("confidence", confidence, tuple(row))
        token = uuid.uuid4().hex[:12]
        rel = str(Path("samples", frame_uuid[:2], frame_uuid, f"labels.{token}.png"))
        files = {rel: _png(labels)}
        conf_rel = None
        if confidence is not None:
            conf_rel = str(Path("samples", frame_uuid[:2], frame_uuid, f"label_confidence.{token}.png"))
            files[conf_rel] = _png(confidence)
        with self._writers(fcntl.LOCK_SH):
            self._write_files(files)
            try:
                with self._transaction() as conn:
                    old = conn.execute("SELECT labels_path, label_confidence_path FROM samples "
                                       "WHERE frame_uuid = ?", (frame_uuid,)).fetchone()
                    if old is not None:
                        conn.execute("UPDATE samples SET labels_path = ?, label_source = ?, "
                                     "label_confidence_path = ? WHERE frame_uuid = ?",
                                     (rel, label_source, conf_rel, frame_uuid))
            except Exception as e:
                self._remove_files(files)
                with self._lock:
                    self.write_failures += 1
                raise SampleStoreError(f"could not update labels of {frame_uuid}: {e}") from e
        if old is None:  # deleted meanwhile
            self._remove_files(files)
            return False
        self._remove_files(p for p in old if p)
        return True

    def delete(self, frame_uuid: str) -> bool:
        # Row first: a crash before the files are gone leaves orphans, never a broken row.
        with self._transaction() as conn:
            row = conn.execute(f"SELECT {', '.join(_FILE_COLUMNS)} FROM samples WHERE frame_uuid = ?",
                               (frame_uuid,)).fetchone()
            if row is not None:
                conn.execute("DELETE FROM samples WHERE frame_uuid = ?", (frame_uuid,))
        if row is None:
            return False
        self._remove_files(p for p in row if p)
        return True

    def stats(self) -> dict:
        with self._lock:
            return {"stored": self.stored, "duplicates": self.duplicates,
                    "rejected_invalid": self.rejected_invalid, "write_failures": self.write_failures,
                    "orphan_files_removed": self.orphan_files_removed}

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for conn in self._connections:
                conn.close()
            self._connections.clear()

    # -- database -----------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise SampleStoreError(f"sample store {self.directory} is closed")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # isolation_level=None: autocommit, explicit transactions where needed.
            conn = sqlite3.connect(self.directory / self.DB_NAME, timeout=self.busy_timeout_s,
                                   isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA synchronous = FULL")  # a commit survives a power cut
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextlib.contextmanager
    def _transaction(self):
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")  # take the write lock now: no upgrade deadlock later
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _create_schema(self) -> None:
        conn = self._conn()
        # Switching to WAL needs a moment alone with the file; a replica opening at
        # the same time makes it report "locked" without waiting, so wait here.
        _retry_locked(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone(), self.busy_timeout_s)
        with self._transaction() as c:
            version = c.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise SampleStoreError(f"{self.directory / self.DB_NAME} has schema version {version}; "
                                       f"this code knows versions up to {SCHEMA_VERSION}: update the bridge")
            if version == 0:   # a new database: the current schema at once
                for statement in _SCHEMA.split(";"):  # executescript would commit mid-transaction
                    if statement.strip():
                        c.execute(statement)
            else:
                for step in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in _MIGRATIONS[step]:
                        c.execute(statement)
                if version < SCHEMA_VERSION:
                    log.info("sample store %s: schema migrated from version %d to %d",
                             self.directory, version, SCHEMA_VERSION)
            c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _insert_row(self, s: Sample, paths: dict[str, str]) -> bool:
        values = {
            "frame_uuid": s.frame_uuid, "robot_id": s.robot_id, "stamp_ns": int(s.stamp_ns),
            "frame_id": s.frame_id, "edge_model_version": s.edge_model_version,
            "mining_policy": s.mining_policy, "mining_score": float(s.mining_score),
            "label_source": s.label_source, "refiner": s.refiner, "received_at": float(s.received_at),
            "tags": json.dumps(s.tags, sort_keys=True), "height": s.rgb.shape[0], "width": s.rgb.shape[1],
            **{col: paths.get(col) for col in _FILE_COLUMNS},
        }
        cur = self._conn().execute(
            f"INSERT OR IGNORE INTO samples ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
            tuple(values.values()))
        return cur.rowcount == 1

    # -- files --------------------------------------------------------------------------
    @contextlib.contextmanager
    def _writers(self, mode: int):
        with open(self.directory / self.LOCK_NAME, "a+b") as f:
            fcntl.flock(f, mode)
            yield

    def _write_files(self, files: dict[str, bytes]) -> None:
        written = []
        try:
            for rel, data in files.items():
                path = self.directory / rel
                makedirs_durable(path.parent)
                # A failed write removes its own temp file; the directories are fsynced
                # once, below, for all the files in them.
                write_atomic(path, data, sync_dir=False)
                written.append(path)
            for directory in {(self.directory / rel).parent for rel in files}:
                fsync_dir(directory)
        except OSError as e:
            self._remove_files(written)
            with self._lock:
                self.write_failures += 1
            raise SampleStoreError(f"could not write sample files under {self.directory}: {e}") from e

    def _remove_files(self, paths) -> None:
        for p in paths:
            try:
                (self.directory / p).unlink(missing_ok=True)
            except OSError as e:  # left as an orphan for the next open's clean-up
                log.warning("sample store: could not delete %s: %s", p, e)

    def _load(self, row: tuple) -> Sample:
        meta, (rgb_p, depth_p, edge_p, labels_p, raw_p, conf_p) = row[:len(_META_COLUMNS)], row[len(_META_COLUMNS):]
        info = _info(meta + (depth_p is not None, raw_p is not None, conf_p is not None))
        hw = (info.height, info.width)
        rgb = cv2.cvtColor(self._read_png(rgb_p, hw + (3,), np.uint8), cv2.COLOR_BGR2RGB)
        depth = None
        if depth_p is not None:
            depth = self._read_png(depth_p, hw, np.uint16).astype(np.float32) / np.float32(1000.0)
        return Sample(
            frame_uuid=info.frame_uuid, robot_id=info.robot_id, stamp_ns=info.stamp_ns, frame_id=info.frame_id,
            edge_model_version=info.edge_model_version, mining_policy=info.mining_policy,
            mining_score=info.mining_score, label_source=info.label_source, refiner=info.refiner,
            received_at=info.received_at, rgb=rgb, depth_m=depth,
            edge_labels=self._read_png(edge_p, hw, np.uint8), labels=self._read_png(labels_p, hw, np.uint8),
            tags=info.tags, raw_payload=None if raw_p is None else (self.directory / raw_p).read_bytes(),
            label_confidence=None if conf_p is None else self._read_png(conf_p, hw, np.uint8))

    def _read_png(self, rel: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        data = (self.directory / rel).read_bytes()
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None or img.shape != shape or img.dtype != dtype:
            raise SampleStoreError(f"{rel} is not a {shape} {np.dtype(dtype)} PNG "
                                   f"(got {'undecodable data' if img is None else _describe(img)})")
        return img

    def _remove_orphans(self) -> None:
        """Delete files no row names (a put or update that crashed before its commit)
        and empty directories. Only while no writer is between its files and its
        commit; if one is, the clean-up waits for a later open."""
        with open(self.directory / self.LOCK_NAME, "a+b") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("sample store %s: another writer is active, orphan clean-up skipped", self.directory)
                return
            named = {p for row in self._conn().execute(f"SELECT {', '.join(_FILE_COLUMNS)} FROM samples")
                     for p in row if p}
            removed = 0
            for root, dirs, names in os.walk(self.directory / "samples", topdown=False):
                for name in names:
                    path = Path(root, name)
                    if str(path.relative_to(self.directory)) not in named:
                        try:
                            path.unlink()
                            removed += 1
                        except OSError as e:
                            log.warning("sample store: could not delete orphan %s: %s", path, e)
                for d in dirs:
                    with contextlib.suppress(OSError):  # not empty
                        Path(root, d).rmdir()
        if removed:
            log.warning("sample store %s: removed %d orphan files left by an interrupted write",
                        self.directory, removed)
        self.orphan_files_removed = removed


def _where(filters: dict[str, str | None]) -> tuple[str, tuple]:
    unknown = set(filters) - set(FILTERS)
    if unknown:
        raise ValueError(f"unknown filter(s) {sorted(unknown)}; known: {FILTERS}")
    used = {k: v for k, v in filters.items() if v is not None}
    if not used:
        return "", ()
    return "WHERE " + " AND ".join(f"{k} = ?" for k in used), tuple(used.values())


def _info(row: tuple) -> SampleInfo:
    values = dict(zip(_META_COLUMNS, row))
    values["tags"] = json.loads(values["tags"])
    return SampleInfo(**values, has_depth=bool(row[-3]), has_raw_payload=bool(row[-2]),
                      has_label_confidence=bool(row[-1]))


def _png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise SampleStoreError(f"PNG encoding failed for a {_describe(img)}")
    return buf.tobytes()


def depth_to_mm(depth_m: np.ndarray) -> np.ndarray:
    """Metres -> uint16 millimetres; NaN, inf, <= 0 and beyond 65.535 m become 0 (invalid)."""
    d = depth_m.astype(np.float64)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(d) & (d > 0) & (d <= _MAX_DEPTH_M)
    return np.where(valid, np.rint(np.where(valid, d, 0) * 1000.0), 0).astype(np.uint16)


def _encode_files(s: Sample) -> dict[str, tuple[str, str, bytes]]:
    """column -> (file stem, extension, bytes)"""
    files = {
        "rgb_path": ("rgb", "png", _png(cv2.cvtColor(np.ascontiguousarray(s.rgb), cv2.COLOR_RGB2BGR))),
        "edge_labels_path": ("edge_labels", "png", _png(s.edge_labels)),
        "labels_path": ("labels", "png", _png(s.labels)),
    }
    if s.depth_m is not None:
        files["depth_path"] = ("depth", "png", _png(depth_to_mm(s.depth_m)))
    if s.raw_payload is not None:
        files["raw_path"] = ("raw", "bin", bytes(s.raw_payload))
    if s.label_confidence is not None:
        files["label_confidence_path"] = ("label_confidence", "png", _png(s.label_confidence))
    return files


def _retry_locked(fn, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
