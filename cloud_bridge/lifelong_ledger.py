"""The lifelong trainer's bookkeeping: which frames a run trained on (the trigger
marker), the candidate ids, the gate's decision records, the published model versions,
and the one-run-at-a-time lock.

FileLedger keeps them in files under lifelong.output_dir (one host: the embedded
default). PgLedger keeps them in the PostgreSQL database beside the samples, so a
trainer on any host sees what the others did, and the lock is a lease in the database:
a second trainer started at the same time finds it held and stops, and a version is
reserved in the database (primary key fleet + version, checked against the lease in the
same transaction) before it is published, so no version is published twice.
"""
from __future__ import annotations

import abc
import contextlib
import fcntl
import json
import re
from pathlib import Path

from durable_files import makedirs_durable, write_atomic

from .replay_buffer import TrainMarker

MARKER_FILE = "marker.json"
_CANDIDATE_RE = re.compile(r"^candidate-(\d{6,})\.(pth|json)$")


class LedgerBusy(RuntimeError):
    """Another trainer holds the run lock (or this one lost it)."""


class TrainingLedger(abc.ABC):
    output_dir: Path
    _held = 0

    @contextlib.contextmanager
    def run_lock(self):
        """Held for a whole run; LedgerBusy if another run holds it. Re-entrant, because
        the main job takes it once for a run and its publishing together."""
        if not self._held:
            with self._exclusive():
                self._held = 1
                try:
                    yield
                finally:
                    self._held = 0
            return
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1

    @abc.abstractmethod
    def _exclusive(self) -> contextlib.AbstractContextManager:
        """The lock itself, across processes (and hosts, where the ledger is shared)."""

    @abc.abstractmethod
    def load_marker(self) -> TrainMarker | None:
        """ValueError for a marker that cannot be read."""

    @abc.abstractmethod
    def save_marker(self, marker: TrainMarker, candidate_id: int) -> None: ...

    @abc.abstractmethod
    def next_candidate_id(self) -> int:
        """An id no candidate had before, even one of a run that died half-way."""

    @abc.abstractmethod
    def save_decision(self, candidate_id: int, record: dict) -> Path:
        """Keep the gate's record; returns the local copy's path."""

    def reserve_version(self, fleet: str, latest_local: int, candidate_id: int | None = None) -> int:
        """The model version to publish next: above every version published so far."""
        return latest_local + 1

    def confirm_version(self, fleet: str, version: int, model_sha256: str) -> None:
        """The reserved version was published."""

    def cancel_version(self, fleet: str, version: int) -> None:
        """The reserved version was not published after all."""

    def _write_record(self, candidate_id: int, record: dict) -> Path:
        path = self.output_dir / "decisions" / f"candidate-{candidate_id:06d}.json"
        makedirs_durable(path.parent)
        write_atomic(path, (json.dumps(record, indent=2) + "\n").encode())
        return path


class FileLedger(TrainingLedger):
    def __init__(self, output_dir: str | Path):
        self.output_dir = Path(output_dir).expanduser()

    @contextlib.contextmanager
    def _exclusive(self):
        makedirs_durable(self.output_dir)
        with open(self.output_dir / "lifelong.lock", "a+b") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LedgerBusy(f"another lifelong run is using {self.output_dir}") from None
            yield

    def load_marker(self) -> TrainMarker | None:
        path = self.output_dir / MARKER_FILE
        try:
            return TrainMarker.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"trigger marker {path} is unreadable ({e}); delete it to count every "
                             "labelled frame as new") from e

    def save_marker(self, marker: TrainMarker, candidate_id: int) -> None:
        data = {**marker.to_json(), "candidate_id": candidate_id}
        write_atomic(self.output_dir / MARKER_FILE, (json.dumps(data) + "\n").encode())

    def next_candidate_id(self) -> int:
        """One above every id used so far, by a checkpoint or a record."""
        used = [int(m.group(1)) for d in ("candidates", "decisions") if (self.output_dir / d).is_dir()
                for p in (self.output_dir / d).iterdir() if (m := _CANDIDATE_RE.match(p.name))]
        return max(used, default=0) + 1

    def save_decision(self, candidate_id: int, record: dict) -> Path:
        return self._write_record(candidate_id, record)


class PgLedger(TrainingLedger):
    """Bookkeeping in the database (pg_db's tables), shared by trainers on any host.
    `name` separates independent trainings sharing one database."""

    LEASE_PREFIX = "lifelong:"

    def __init__(self, db, output_dir: str | Path, holder: str = "", name: str = "default", lease_ttl_s: float = 60.0):
        from .leases import Lease, default_holder

        self.db, self.name = db, name
        self.output_dir = Path(output_dir).expanduser()
        self.lease = Lease(db, self.LEASE_PREFIX + name, holder or default_holder("trainer"), lease_ttl_s)

    @contextlib.contextmanager
    def _exclusive(self):
        if not self.lease.acquire():
            state = self.lease.current()
            who = f"{state.holder}, for {state.expires_in_s:.0f}s more unless renewed" if state else "another trainer"
            raise LedgerBusy(f"another trainer holds the lifelong lease ({who}); nothing done")
        try:
            yield
        finally:
            self.lease.release()

    def _fenced(self, cur, what: str) -> None:
        if not self.lease.held_in(cur):
            raise LedgerBusy(f"the lifelong lease is no longer held by {self.lease.holder}: {what} refused")

    def load_marker(self) -> TrainMarker | None:
        with self.db.cursor() as cur:
            cur.execute("SELECT created_at, seen FROM train_markers WHERE ledger = %s", (self.name,))
            row = cur.fetchone()
        return None if row is None else TrainMarker.from_json({"created_at": row[0], "seen": row[1]})

    def save_marker(self, marker: TrainMarker, candidate_id: int) -> None:
        from psycopg.types.json import Jsonb

        data = marker.to_json()
        with self.db.cursor(transaction=True) as cur:
            self._fenced(cur, "saving the trigger marker")
            cur.execute("INSERT INTO train_markers (ledger, created_at, candidate_id, seen) VALUES (%s, %s, %s, %s) "
                        "ON CONFLICT (ledger) DO UPDATE SET created_at = excluded.created_at, "
                        "candidate_id = excluded.candidate_id, seen = excluded.seen",
                        (self.name, data["created_at"], candidate_id, Jsonb(data["seen"])))

    def next_candidate_id(self) -> int:
        with self.db.cursor() as cur:
            cur.execute("SELECT nextval('candidate_ids')")
            return int(cur.fetchone()[0])

    def save_decision(self, candidate_id: int, record: dict) -> Path:
        from psycopg.types.json import Jsonb

        with self.db.cursor(transaction=True) as cur:
            self._fenced(cur, f"recording candidate {candidate_id}'s decision")
            cur.execute("INSERT INTO decisions (candidate_id, ledger, published, holder, record) "
                        "VALUES (%s, %s, %s, %s, %s)",
                        (candidate_id, self.name, bool(record.get("published")), self.lease.holder, Jsonb(record)))
        return self._write_record(candidate_id, record)   # a copy for people on this host

    def decisions(self) -> list[dict]:
        with self.db.cursor() as cur:
            cur.execute("SELECT record FROM decisions WHERE ledger = %s ORDER BY candidate_id", (self.name,))
            return [row[0] for row in cur.fetchall()]

    def reserve_version(self, fleet: str, latest_local: int, candidate_id: int | None = None) -> int:
        with self.db.cursor(transaction=True) as cur:
            self._fenced(cur, "publishing a model version")
            # Reservations of runs that died stay: their numbers are skipped, never reused.
            cur.execute("SELECT coalesce(max(version), 0) FROM published_models WHERE fleet = %s", (fleet,))
            version = max(int(cur.fetchone()[0]), latest_local) + 1
            cur.execute("INSERT INTO published_models (fleet, version, state, holder, candidate_id) "
                        "VALUES (%s, %s, 'reserved', %s, %s)", (fleet, version, self.lease.holder, candidate_id))
        return version

    def confirm_version(self, fleet: str, version: int, model_sha256: str) -> None:
        with self.db.cursor() as cur:
            cur.execute("UPDATE published_models SET state = 'published', model_sha256 = %s, published_at = now() "
                        "WHERE fleet = %s AND version = %s", (model_sha256, fleet, version))

    def cancel_version(self, fleet: str, version: int) -> None:
        with self.db.cursor() as cur:
            cur.execute("DELETE FROM published_models WHERE fleet = %s AND version = %s AND state = 'reserved'",
                        (fleet, version))

    def published_versions(self, fleet: str) -> list[tuple[int, str, str]]:
        """(version, state, holder), oldest first."""
        with self.db.cursor() as cur:
            cur.execute("SELECT version, state, holder FROM published_models WHERE fleet = %s ORDER BY version",
                        (fleet,))
            return [tuple(row) for row in cur.fetchall()]
