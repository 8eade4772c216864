"""The sample store in PostgreSQL, for bridge replicas and trainers on several hosts.

A sample is one row of `samples` (pg_db's schema): its metadata and its images as PNG
bytes (bytea, the same encodings as the SQLite store's files), written by one INSERT, so
a reader sees a sample whole or not at all. Storing is idempotent by frame uuid across
replicas through the UNIQUE constraint (INSERT ... ON CONFLICT DO NOTHING): two replicas
storing the same frame at once both succeed, one of them reports the duplicate.

When the database goes away (a restart, a failover, the network), calls raise
pg_db.StoreUnavailable and the next call connects again; the bridge holds the frame,
unacknowledged, and tries again.
"""
from __future__ import annotations

import json
import threading

import cv2
import numpy as np

from .ops_config import PostgresConfig
from .pg_db import PgDatabase
from .sample_store import (FILTERS, Sample, SampleInfo, SampleStore, SampleStoreError, _check_label_source,
                           _check_labels, _describe, _encode_files, _info, _png, validate_sample)

_META = ("frame_uuid", "robot_id", "stamp_ns", "frame_id", "edge_model_version", "mining_policy", "mining_score",
         "label_source", "refiner", "received_at", "tags", "height", "width")
_META_SELECT = ", ".join("tags::text" if c == "tags" else c for c in _META)
# sample_store's file columns -> this table's blob columns
_BLOBS = {"rgb_path": "rgb", "depth_path": "depth", "edge_labels_path": "edge_labels", "labels_path": "labels",
          "raw_path": "raw", "label_confidence_path": "label_confidence"}


class PgSampleStore(SampleStore):
    """Samples in PostgreSQL. Safe for several threads, processes and hosts."""

    def __init__(self, db: PgDatabase):
        self.db = db
        self._lock = threading.Lock()
        self.stored = 0
        self.duplicates = 0
        self.rejected_invalid = 0
        self.write_failures = 0

    @classmethod
    def open(cls, dsn: str, config: PostgresConfig = PostgresConfig(), application_name: str = "seg-dog"):
        """Connect, bring the schema up to date, and return the store."""
        return cls(PgDatabase(dsn, config, application_name))

    @property
    def where(self) -> str:
        return self.db.where

    # -- SampleStore --------------------------------------------------------------------
    def put(self, sample: Sample) -> bool:
        try:
            validate_sample(sample)
        except ValueError:
            self._count("rejected_invalid")
            raise
        try:
            known = sample.frame_uuid in self   # spares a redelivery's PNG encoding; the UNIQUE constraint decides
        except SampleStoreError:
            self._count("write_failures")
            raise
        if known:
            self._count("duplicates")
            return False
        blobs = {_BLOBS[col]: data for col, (_, _, data) in _encode_files(sample).items()}
        values = {
            "frame_uuid": sample.frame_uuid, "robot_id": sample.robot_id, "stamp_ns": int(sample.stamp_ns),
            "frame_id": sample.frame_id, "edge_model_version": sample.edge_model_version,
            "mining_policy": sample.mining_policy, "mining_score": float(sample.mining_score),
            "label_source": sample.label_source, "refiner": sample.refiner,
            "received_at": float(sample.received_at), "tags": json.dumps(sample.tags, sort_keys=True),
            "height": sample.rgb.shape[0], "width": sample.rgb.shape[1], **blobs}
        # Images as binary parameters (%b): in text form they would travel and be parsed as hex.
        placeholders = ", ".join("%s::jsonb" if k == "tags" else "%b" if k in blobs else "%s" for k in values)
        try:
            with self.db.cursor() as cur:   # one statement: its own transaction
                cur.execute(f"INSERT INTO samples ({', '.join(values)}) VALUES ({placeholders}) "
                            "ON CONFLICT (frame_uuid) DO NOTHING RETURNING seq", tuple(values.values()))
                inserted = cur.fetchone() is not None
        except SampleStoreError:
            self._count("write_failures")
            raise
        self._count("stored" if inserted else "duplicates")
        return inserted

    def get(self, frame_uuid: str) -> Sample | None:
        with self.db.cursor() as cur:
            cur.execute(f"SELECT {_META_SELECT}, rgb, depth, edge_labels, labels, raw, label_confidence "
                        "FROM samples WHERE frame_uuid = %s", (frame_uuid,))
            row = cur.fetchone()
        if row is None:
            return None
        meta, (rgb, depth, edge, labels, raw, conf) = row[:len(_META)], row[len(_META):]
        info = _info(tuple(meta) + (depth is not None, raw is not None, conf is not None))
        hw = (info.height, info.width)
        where = f"sample {frame_uuid}"
        return Sample(
            frame_uuid=info.frame_uuid, robot_id=info.robot_id, stamp_ns=info.stamp_ns, frame_id=info.frame_id,
            edge_model_version=info.edge_model_version, mining_policy=info.mining_policy,
            mining_score=info.mining_score, label_source=info.label_source, refiner=info.refiner,
            received_at=info.received_at,
            rgb=cv2.cvtColor(_decode(rgb, hw + (3,), np.uint8, f"{where} rgb"), cv2.COLOR_BGR2RGB),
            depth_m=None if depth is None else
            _decode(depth, hw, np.uint16, f"{where} depth").astype(np.float32) / np.float32(1000.0),
            edge_labels=_decode(edge, hw, np.uint8, f"{where} edge_labels"),
            labels=_decode(labels, hw, np.uint8, f"{where} labels"), tags=info.tags,
            raw_payload=None if raw is None else bytes(raw),
            label_confidence=None if conf is None else _decode(conf, hw, np.uint8, f"{where} label_confidence"))

    def __contains__(self, frame_uuid: object) -> bool:
        with self.db.cursor() as cur:
            cur.execute("SELECT 1 FROM samples WHERE frame_uuid = %s", (frame_uuid,))
            return cur.fetchone() is not None

    def count(self, **filters: str) -> int:
        where, args = _where(filters)
        with self.db.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM samples {where}", args)
            return cur.fetchone()[0]

    def list(self, limit: int = 100, offset: int = 0, robot_id: str | None = None,
             label_source: str | None = None) -> list[SampleInfo]:
        if limit < 0 or offset < 0:
            raise ValueError(f"limit and offset must be >= 0, got {limit}, {offset}")
        where, args = _where({"robot_id": robot_id, "label_source": label_source})
        with self.db.cursor() as cur:
            cur.execute(f"SELECT {_META_SELECT}, depth IS NOT NULL, raw IS NOT NULL, label_confidence IS NOT NULL "
                        f"FROM samples {where} ORDER BY seq LIMIT %s OFFSET %s", (*args, limit, offset))
            return [_info(tuple(row)) for row in cur.fetchall()]

    def update_labels(self, frame_uuid: str, labels: np.ndarray, label_source: str,
                      confidence: np.ndarray | None = None) -> bool:
        _check_label_source(label_source)
        with self.db.cursor() as cur:
            cur.execute("SELECT height, width FROM samples WHERE frame_uuid = %s", (frame_uuid,))
            row = cur.fetchone()
        if row is None:
            return False
        _check_labels("labels", labels, tuple(row))
        if confidence is not None:
            _check_labels("confidence", confidence, tuple(row))
        try:
            with self.db.cursor() as cur:
                cur.execute("UPDATE samples SET labels = %b, label_source = %s, label_confidence = %b "
                            "WHERE frame_uuid = %s",
                            (_png(labels), label_source, None if confidence is None else _png(confidence),
                             frame_uuid))
                return cur.rowcount == 1   # 0: deleted meanwhile
        except SampleStoreError:
            self._count("write_failures")
            raise

    def delete(self, frame_uuid: str) -> bool:
        with self.db.cursor() as cur:
            cur.execute("DELETE FROM samples WHERE frame_uuid = %s", (frame_uuid,))
            return cur.rowcount == 1

    def ping(self) -> bool:
        return self.db.ping()

    def stats(self) -> dict:
        with self._lock:
            return {"stored": self.stored, "duplicates": self.duplicates, "rejected_invalid": self.rejected_invalid,
                    "write_failures": self.write_failures, "reconnects": self.db.reconnects}

    def close(self) -> None:
        self.db.close()

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)


def _where(filters: dict[str, str | None]) -> tuple[str, tuple]:
    unknown = set(filters) - set(FILTERS)
    if unknown:
        raise ValueError(f"unknown filter(s) {sorted(unknown)}; known: {FILTERS}")
    used = {k: v for k, v in filters.items() if v is not None}
    if not used:
        return "", ()
    return "WHERE " + " AND ".join(f"{k} = %s" for k in used), tuple(used.values())


def _decode(data: bytes, shape: tuple[int, ...], dtype, what: str) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.shape != shape or img.dtype != dtype:
        raise SampleStoreError(f"{what} is not a {shape} {np.dtype(dtype)} PNG "
                               f"(got {'undecodable data' if img is None else _describe(img)})")
    return img
