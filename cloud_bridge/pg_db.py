"""The cloud side's PostgreSQL database: connections and the versioned schema.

One database holds what bridge replicas and lifelong trainers on several hosts share:
the samples with their images (pg_store), and the trainer's bookkeeping, lease and
published model versions (lifelong_ledger, leases). Every process that opens it brings
the schema up to date itself: the migrations run in one transaction under an advisory
lock, so replicas starting at once apply each step once, and a database newer than the
code is refused with a message instead of being written to.

Connections: one per thread (psycopg connections serialize their users), opened on
first use, dropped when the server goes away (a restart, a failover) and opened again by
the next call; the password file is read at each connect, so a rotated password needs
no restart.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path

import psycopg

from .ops_config import PostgresConfig
from .sample_store import SampleStoreError, StoreUnavailable

log = logging.getLogger(__name__)

# Version -> the statements that bring the version before it up to it. Never edit a
# released step: add one.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: ("""CREATE TABLE samples (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,   -- storing order, stable for paging
            frame_uuid text NOT NULL UNIQUE,                      -- idempotent puts across replicas
            robot_id text NOT NULL,
            stamp_ns bigint NOT NULL,
            frame_id text NOT NULL,
            edge_model_version text NOT NULL,
            mining_policy text NOT NULL,
            mining_score double precision NOT NULL,
            label_source text NOT NULL,
            refiner text NOT NULL,
            received_at double precision NOT NULL,
            tags jsonb NOT NULL,
            height integer NOT NULL,
            width integer NOT NULL,
            rgb bytea NOT NULL,               -- PNG, as the SQLite store's files
            depth bytea,                      -- 16-bit PNG, millimetres
            edge_labels bytea NOT NULL,
            labels bytea NOT NULL,
            raw bytea)""",
        "CREATE INDEX samples_robot_id ON samples (robot_id)",
        "CREATE INDEX samples_label_source ON samples (label_source)",
        # PNG does not compress further: store the images out of line without trying.
        *(f"ALTER TABLE samples ALTER COLUMN {c} SET STORAGE EXTERNAL"
          for c in ("rgb", "depth", "edge_labels", "labels", "raw"))),
    2: ("ALTER TABLE samples ADD COLUMN label_confidence bytea",
        "ALTER TABLE samples ALTER COLUMN label_confidence SET STORAGE EXTERNAL"),
    3: ("""CREATE TABLE leases (
            name text PRIMARY KEY,
            holder text NOT NULL,
            acquired_at timestamptz NOT NULL,
            expires_at timestamptz NOT NULL)""",
        """CREATE TABLE train_markers (
            ledger text PRIMARY KEY,
            created_at double precision NOT NULL,
            candidate_id bigint NOT NULL,
            seen jsonb NOT NULL)""",
        "CREATE SEQUENCE candidate_ids",
        """CREATE TABLE decisions (
            candidate_id bigint PRIMARY KEY,
            ledger text NOT NULL,
            published boolean NOT NULL,
            holder text NOT NULL,
            written_at timestamptz NOT NULL DEFAULT now(),
            record jsonb NOT NULL)""",
        """CREATE TABLE published_models (
            fleet text NOT NULL,
            version integer NOT NULL,
            state text NOT NULL CHECK (state IN ('reserved', 'published')),
            holder text NOT NULL,
            candidate_id bigint,
            model_sha256 text,
            reserved_at timestamptz NOT NULL DEFAULT now(),
            published_at timestamptz,
            PRIMARY KEY (fleet, version))"""),
}
SCHEMA_VERSION = max(MIGRATIONS)
_MIGRATION_LOCK = 0x5E6D06   # pg_advisory_xact_lock key: one migrating process at a time

# Errors after which the connection is unusable: the server restarted or went away.
_GONE = (psycopg.OperationalError, psycopg.InterfaceError)


def resolve_dsn(config: PostgresConfig, environ: dict[str, str]) -> str:
    """The connection string: the environment variable config.dsn_env if set, else config.dsn."""
    dsn = (environ.get(config.dsn_env) if config.dsn_env else None) or config.dsn
    if not dsn:
        raise ValueError(f"store.backend is postgres but neither store.postgres.dsn nor the environment variable "
                         f"{config.dsn_env or '(store.postgres.dsn_env)'} names the database, e.g. "
                         "'host=db.lan port=5432 dbname=segdog user=bridge'")
    return dsn


def read_password(password_file: str) -> str | None:
    if not password_file:
        return None
    path = Path(password_file).expanduser()
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise StoreUnavailable(f"cannot read the database password file {path}: {e}") from e
    if not lines or not lines[0]:
        raise StoreUnavailable(f"the database password file {path} is empty: its first line is the password")
    return lines[0]


class PgDatabase:
    """Per-thread connections to one database, and its schema."""

    def __init__(self, dsn: str, config: PostgresConfig = PostgresConfig(), application_name: str = "seg-dog",
                 migrate: bool = True):
        self.dsn, self.config = dsn, config
        self.application_name = config.application_name or application_name
        self._local = threading.local()
        self._connections: list[psycopg.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self.reconnects = 0
        if migrate:
            self.migrate()

    @property
    def where(self) -> str:
        """The database for messages, without secrets."""
        try:
            info = psycopg.conninfo.conninfo_to_dict(self.dsn)
        except psycopg.ProgrammingError:
            return "the configured database"
        return f"postgresql {info.get('user', '')}@{info.get('host', 'localhost')}:{info.get('port', 5432)}/" \
               f"{info.get('dbname', '')}"

    # -- connections -------------------------------------------------------------------
    def connect(self) -> psycopg.Connection:
        """A new autocommit connection (the caller owns it)."""
        kwargs = {}
        password = read_password(self.config.password_file)
        if password is not None:
            kwargs["password"] = password
        try:
            return psycopg.connect(
                self.dsn, autocommit=True, connect_timeout=self.config.connect_timeout_s,
                application_name=self.application_name,
                options=f"-c statement_timeout={int(self.config.statement_timeout_s * 1000)}",
                # A server that vanished without a FIN (host down, network cut) is noticed in ~20 s.
                keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=2, **kwargs)
        except psycopg.Error as e:
            raise StoreUnavailable(f"cannot connect to {self.where}: {_first_line(e)}") from e

    def conn(self) -> psycopg.Connection:
        if self._closed:
            raise SampleStoreError(f"{self.where}: the store is closed")
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = self._local.conn = self.connect()
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextlib.contextmanager
    def cursor(self, transaction: bool = False):
        """A cursor on this thread's connection, in a transaction if asked. A lost
        connection is dropped (the next call opens a new one) and reported as
        StoreUnavailable; other database errors as SampleStoreError."""
        conn = self.conn()
        try:
            if transaction:
                with conn.transaction(), conn.cursor() as cur:
                    yield cur
            else:
                with conn.cursor() as cur:
                    yield cur
        except _GONE as e:
            self._drop(conn)
            raise StoreUnavailable(f"lost {self.where}: {_first_line(e)}") from e
        except psycopg.Error as e:
            raise SampleStoreError(f"{self.where}: {_first_line(e)}") from e

    def _drop(self, conn: psycopg.Connection) -> None:
        with contextlib.suppress(Exception):
            conn.close()
        with self._lock:
            if conn in self._connections:
                self._connections.remove(conn)
            self.reconnects += 1
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None

    def ping(self) -> bool:
        try:
            with self.cursor() as cur:
                cur.execute("SELECT 1")
                return cur.fetchone() == (1,)
        except SampleStoreError:
            return False

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for conn in self._connections:
                with contextlib.suppress(Exception):
                    conn.close()
            self._connections.clear()

    # -- schema ------------------------------------------------------------------------
    def schema_version(self) -> int:
        with self.cursor() as cur:
            cur.execute("SELECT to_regclass('schema_version') IS NOT NULL")
            if not cur.fetchone()[0]:
                return 0
            cur.execute("SELECT version FROM schema_version")
            row = cur.fetchone()
            return row[0] if row else 0

    def migrate(self) -> None:
        with self.cursor(transaction=True) as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            cur.execute("CREATE TABLE IF NOT EXISTS schema_version (only_row boolean PRIMARY KEY DEFAULT true "
                        "CHECK (only_row), version integer NOT NULL)")
            cur.execute("SELECT version FROM schema_version")
            row = cur.fetchone()
            version = row[0] if row else 0
            if version > SCHEMA_VERSION:
                raise SampleStoreError(f"{self.where} has schema version {version}; this code knows versions up "
                                       f"to {SCHEMA_VERSION}: update the bridge and trainer images")
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[step]:
                    cur.execute(statement)
            cur.execute("INSERT INTO schema_version (version) VALUES (%s) "
                        "ON CONFLICT (only_row) DO UPDATE SET version = excluded.version", (SCHEMA_VERSION,))
        if version < SCHEMA_VERSION:
            log.info("%s: schema migrated from version %d to %d", self.where, version, SCHEMA_VERSION)


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__

