"""PostgreSQL store beyond the shared contract (tests/unit/test_sample_store.py), on a real
private cluster: versioned migrations, the database restarted under a writer, a writer
SIGKILLed mid-stream, the connection string from the environment, the password file.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from cloud_bridge.config import BridgeConfig
from cloud_bridge.ops_config import PostgresConfig, StoreConfig
from cloud_bridge.pg_db import SCHEMA_VERSION, PgDatabase, StoreUnavailable
from cloud_bridge.pg_store import PgSampleStore
from cloud_bridge.sample_store import SampleStoreError
from cloud_bridge.store_factory import open_store

sys.path.insert(0, str(Path(__file__).parent / "unit"))
from test_sample_store import assert_same_sample, make_sample  # noqa: E402

pytestmark = pytest.mark.timeout(180)
REPO = Path(__file__).resolve().parents[1]


def open_pg(pg_database) -> PgSampleStore:
    dsn, password_file = pg_database
    return PgSampleStore.open(dsn, PostgresConfig(password_file=password_file))


def test_an_older_schema_is_migrated_in_place_and_a_newer_one_refused(pg_database):
    dsn, password_file = pg_database
    old = make_sample(3)
    old.label_confidence = None
    with open_pg(pg_database) as s:
        s.put(old)
    with psycopg.connect(dsn, password=Path(password_file).read_text().strip(), autocommit=True) as conn:
        # Back to version 1: no label_confidence, no trainer bookkeeping.
        for table in ("published_models", "decisions", "train_markers", "leases"):
            conn.execute(f"DROP TABLE {table}")
        conn.execute("DROP SEQUENCE candidate_ids")
        conn.execute("ALTER TABLE samples DROP COLUMN label_confidence")
        conn.execute("UPDATE schema_version SET version = 1")
    with open_pg(pg_database) as s:
        assert s.db.schema_version() == SCHEMA_VERSION == 3
        assert_same_sample(s.get(old.frame_uuid), old)
        new = make_sample(4)
        assert new.label_confidence is not None and s.put(new) is True
        assert_same_sample(s.get(new.frame_uuid), new)
    with psycopg.connect(dsn, password=Path(password_file).read_text().strip(), autocommit=True) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(SampleStoreError, match="schema version 99"):
        open_pg(pg_database)


def test_database_restart_under_a_writer_loses_nothing(pg_database, postgres_server):
    with open_pg(pg_database) as s:
        for i in range(5):
            assert s.put(make_sample(i))
        postgres_server.stop()
        with pytest.raises(StoreUnavailable, match="lost|cannot connect"):
            s.put(make_sample(5))
        with pytest.raises(StoreUnavailable):
            s.count()
        assert not s.ping()
        postgres_server.start()
        assert s.ping()
        # The put that failed did not half-happen: stored now, once.
        assert s.put(make_sample(5)) is True
        assert s.put(make_sample(5)) is False
        assert s.count() == 6
        assert s.stats()["write_failures"] == 1 and s.stats()["reconnects"] >= 1


WRITER = """
import json, sys
sys.path.insert(0, sys.argv[2])
from test_sample_store import make_sample
from cloud_bridge.pg_store import PgSampleStore
from cloud_bridge.ops_config import PostgresConfig
spec = json.loads(sys.argv[1])
store = PgSampleStore.open(spec["dsn"], PostgresConfig(password_file=spec["password_file"]))
for i in range(100000):
    store.put(make_sample(i, h=240, w=320))
    print(i, flush=True)
"""


def test_a_writer_killed_mid_stream_leaves_only_whole_samples(pg_database):
    dsn, password_file = pg_database
    proc = subprocess.Popen([sys.executable, "-c", WRITER, json.dumps({"dsn": dsn, "password_file": password_file}),
                             str(Path(__file__).parent / "unit")], stdout=subprocess.PIPE, text=True,
                            cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    try:
        for _ in range(8):   # a few stored, then killed in the middle of the next ones
            assert proc.stdout.readline(), "the writer died before storing"
        time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    with open_pg(pg_database) as s:
        n = s.count()
        assert n >= 8
        for info in s.list(limit=1000):   # every visible sample is complete
            i = int(info.frame_uuid.split("-")[0], 16)
            assert_same_sample(s.get(info.frame_uuid), make_sample(i, h=240, w=320))


def test_the_connection_string_comes_from_the_environment_and_the_password_from_a_file(pg_database, tmp_path):
    dsn, password_file = pg_database
    config = BridgeConfig(store=StoreConfig(backend="postgres", postgres=PostgresConfig(
        dsn="host=192.0.2.1 dbname=not-this-one", dsn_env="SEG_TEST_DSN", password_file=password_file,
        connect_timeout_s=2)))
    with open_store(config, {"SEG_TEST_DSN": dsn}) as store:
        assert store.put(make_sample(1)) and store.count() == 1
    with pytest.raises(ValueError, match="neither store.postgres.dsn nor the environment variable SEG_TEST_DSN"):
        open_store(BridgeConfig(store=StoreConfig(backend="postgres", postgres=PostgresConfig(
            dsn_env="SEG_TEST_DSN"))), {})
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    with pytest.raises(StoreUnavailable, match="password authentication failed"):
        PgDatabase(dsn, PostgresConfig(password_file=str(wrong)))
    with pytest.raises(StoreUnavailable, match="cannot read the database password file"):
        PgDatabase(dsn, PostgresConfig(password_file=str(tmp_path / "missing")))
