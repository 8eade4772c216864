"""Open the sample store and the lifelong trainer's bookkeeping that a bridge config names.

    store = open_store(config, os.environ)          # SqliteSampleStore or PgSampleStore
    ledger = open_ledger(config, store, output_dir)  # FileLedger or PgLedger

SQLite (the embedded default) keeps samples under <storage_dir>/samples and the
trainer's bookkeeping in files under lifelong.output_dir, on one host. PostgreSQL keeps
both in the database named by store.postgres (or the environment variable
store.postgres.dsn_env), so replicas and trainers on any host share them.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path

from .config import BridgeConfig
from .sample_store import SampleStore, SampleStoreError, SqliteSampleStore, StoreUnavailable

log = logging.getLogger(__name__)


def sqlite_directory(config: BridgeConfig) -> Path:
    return Path(config.storage_dir).expanduser() / "samples"


def open_store(config: BridgeConfig, environ: Mapping[str, str], application_name: str = "",
               sqlite_dir: Path | None = None, create: bool = True) -> SampleStore:
    """The configured store. ValueError for a config that names no database;
    SampleStoreError when the store cannot be opened (database down, newer schema,
    no SQLite store at sqlite_dir while create is False)."""
    if config.store.backend == "postgres":
        from .pg_db import resolve_dsn
        from .pg_store import PgSampleStore

        return PgSampleStore.open(resolve_dsn(config.store.postgres, dict(environ)), config.store.postgres,
                                  application_name or config.bridge_id)
    directory = sqlite_dir or sqlite_directory(config)
    if not create and not directory.is_dir():
        raise SampleStoreError(f"no sample store at {directory}")
    return SqliteSampleStore(directory)


def open_store_waiting(config: BridgeConfig, environ: Mapping[str, str], stop: threading.Event,
                       application_name: str = "") -> SampleStore | None:
    """open_store, waiting (every store.retry_s) while the database is not up yet: services
    start in any order. None if `stop` is set meanwhile."""
    warned = False
    while not stop.is_set():
        try:
            return open_store(config, environ, application_name)
        except StoreUnavailable as e:
            if not warned:
                log.warning("waiting for the sample store: %s", e)
                warned = True
            stop.wait(config.store.retry_s)
    return None


def open_ledger(store: SampleStore, output_dir: str | Path, holder: str = ""):
    """The trainer's bookkeeping beside the store: in the database for PostgreSQL, in
    files under output_dir otherwise."""
    from .lifelong_ledger import FileLedger, PgLedger

    db = getattr(store, "db", None)   # PgSampleStore's database (not imported here: psycopg only when used)
    if db is not None:
        return PgLedger(db, output_dir, holder=holder)
    return FileLedger(output_dir)
