"""The SampleStore contract, on both backends (SQLite + PNG files, and PostgreSQL on a
real private cluster): exact round trip, idempotent put, filters, label updates,
deletes, persistence, invalid input, two processes (two threads each) storing the same
uuids. Then each backend's own failures: for SQLite a crash between the file writes and
the commit, for PostgreSQL a writer killed mid-stream and the database restarted.

    PYTHONPATH=. .venv/bin/python -m pytest tests/unit/test_sample_store.py -q
"""
from __future__ import annotations

import fcntl
import inspect
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

import cloud_bridge
from cloud_bridge.ops_config import PostgresConfig
from cloud_bridge.pg_store import PgSampleStore
from cloud_bridge.sample_store import (
    Sample, SampleInfo, SampleStoreError, SqliteSampleStore, depth_to_mm,
)

REPO_ROOT = Path(cloud_bridge.__file__).resolve().parents[1]
ROBOTS = ("dog-1", "dog-2", "dog-3")
SOURCES = ("sam", "region", "human", "ground_truth")


def make_sample(i: int, variant: int = 0, h: int = 12, w: int = 16) -> Sample:
    """A deterministic sample; `variant` changes every field but the uuid."""
    rng = np.random.default_rng(1000 * i + variant)
    depth = rng.uniform(0.2, 12.0, (h, w)).astype(np.float32)
    depth[0, :4] = [np.nan, 0.0, np.inf, -1.0]  # invalid ways a camera reports "no return"
    return Sample(
        frame_uuid=f"{i:08x}-3f2a-4c1b-9e7d-{i:012x}",
        robot_id=("dog-1", "dog-2", "dog-3")[(i + variant) % 3],
        stamp_ns=1_760_000_000_000_000_000 + 33_333_333 * i + variant,
        frame_id=f"camera_color_optical_frame_{variant}",
        edge_model_version=f"rfnet-2025.{variant}",
        mining_policy=("entropy", "disagreement")[variant % 2],
        mining_score=0.125 * i + variant,
        label_source=("sam", "region", "human", "ground_truth")[(i + 2 * variant) % 4],
        refiner=f"sam-vit-h/{variant}",
        received_at=1_760_000_000.5 + i + variant,
        rgb=rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        depth_m=depth if i % 5 else None,
        edge_labels=rng.integers(0, 30, (h, w), dtype=np.uint8),
        labels=rng.integers(0, 30, (h, w), dtype=np.uint8),
        tags={"task": f"task-{i % 3}", "scene": "stairs" if variant else "corridor"},
        raw_payload=rng.bytes(100 + i) if i % 2 else None,
        label_confidence=rng.integers(0, 256, (h, w), dtype=np.uint8) if i % 3 else None,
    )


def assert_same_sample(got: Sample, want: Sample) -> None:
    assert got is not None
    for f in fields(Sample):
        g, w = getattr(got, f.name), getattr(want, f.name)
        if f.name == "depth_m":
            if w is None:
                assert g is None
                continue
            assert g.dtype == np.float32 and g.shape == w.shape
            np.testing.assert_array_equal(g, depth_to_mm(w).astype(np.float32) / np.float32(1000))
        elif isinstance(w, np.ndarray):
            assert g.dtype == w.dtype and g.shape == w.shape, f.name
            np.testing.assert_array_equal(g, w, err_msg=f.name)
        else:
            assert g == w and type(g) is type(w), f.name


def sample_files(directory: Path) -> list[Path]:
    return sorted(p for p in (directory / "samples").rglob("*") if p.is_file())


def files_of(store) -> list[Path]:
    """The SQLite store's pixel files ([] for PostgreSQL, which keeps them in rows)."""
    return sample_files(store.directory) if isinstance(store, SqliteSampleStore) else []


def open_spec(spec: dict):
    """A store from a JSON-able description (also used by the scripts run as processes)."""
    if spec["backend"] == "sqlite":
        return SqliteSampleStore(spec["directory"])
    return PgSampleStore.open(spec["dsn"], PostgresConfig(password_file=spec["password_file"]))


@pytest.fixture(params=["sqlite", "postgres"])
def spec(request, tmp_path):
    if request.param == "sqlite":
        return {"backend": "sqlite", "directory": str(tmp_path / "store")}
    dsn, password_file = request.getfixturevalue("pg_database")
    return {"backend": "postgres", "dsn": dsn, "password_file": password_file}


@pytest.fixture
def store(spec):
    with open_spec(spec) as s:
        yield s


def test_round_trip_of_every_field(store):
    for i in (1, 5, 7):  # with and without depth, with and without a raw payload
        want = make_sample(i)
        assert store.put(want) is True
        assert_same_sample(store.get(want.frame_uuid), want)
    assert store.get("nope-nope") is None


def test_depth_is_stored_in_millimetres_with_zero_for_invalid(store):
    s = make_sample(1)
    s.depth_m[0, 4:8] = [0.0004, 0.0006, 65.5, 65.6]  # rounds to 0 / 1 mm / in range / too far
    store.put(s)
    got = store.get(s.frame_uuid).depth_m
    np.testing.assert_array_equal(got[0, :8], np.float32([0, 0, 0, 0, 0, 0.001, 65.5, 0]))
    valid = np.isfinite(s.depth_m) & (s.depth_m > 0) & (s.depth_m <= 65.535)
    assert np.abs(got[valid] - s.depth_m[valid]).max() <= 0.0005 + 1e-6
    if isinstance(store, SqliteSampleStore):
        files = {p.name.split(".")[0]: p for p in sample_files(store.directory)}
        import cv2
        assert cv2.imread(str(files["depth"]), cv2.IMREAD_UNCHANGED).dtype == np.uint16


def test_put_is_idempotent_and_keeps_the_first_sample(store):
    first, second = make_sample(3), make_sample(3, variant=1)
    assert first.frame_uuid == second.frame_uuid
    assert store.put(first) is True
    files = files_of(store)
    assert store.put(second) is False
    assert store.put(first) is False
    assert_same_sample(store.get(first.frame_uuid), first)
    assert files_of(store) == files
    assert store.count() == 1
    assert store.stats()["stored"] == 1 and store.stats()["duplicates"] == 2


def test_count_and_list_filters(store):
    samples = [make_sample(i) for i in range(20)]
    for s in samples:
        store.put(s)
    assert store.count() == 20 and len(samples) == 20
    for robot in ROBOTS:
        assert store.count(robot_id=robot) == sum(s.robot_id == robot for s in samples)
    for src in SOURCES:
        assert store.count(label_source=src) == sum(s.label_source == src for s in samples)
    assert store.count(robot_id="dog-2", label_source="sam") == sum(
        s.robot_id == "dog-2" and s.label_source == "sam" for s in samples)
    assert store.count(mining_policy="entropy", robot_id=None) == 20
    assert store.count(robot_id="nobody") == 0
    with pytest.raises(ValueError, match="unknown filter"):
        store.count(colour="red")

    listed = store.list(limit=100)
    assert [m.frame_uuid for m in listed] == [s.frame_uuid for s in samples]  # stored order
    assert all(isinstance(m, SampleInfo) and not hasattr(m, "rgb") for m in listed)
    m, s = listed[5], samples[5]
    assert (m.robot_id, m.stamp_ns, m.tags, m.height, m.width, m.has_depth, m.has_raw_payload) == (
        s.robot_id, s.stamp_ns, s.tags, 12, 16, False, True)
    pages = [store.list(limit=7, offset=o) for o in (0, 7, 14, 21)]
    assert [len(p) for p in pages] == [7, 7, 6, 0]
    assert [m for p in pages for m in p] == listed
    assert [m.frame_uuid for m in store.list(robot_id="dog-1", label_source="human")] == [
        s.frame_uuid for s in samples if s.robot_id == "dog-1" and s.label_source == "human"]
    with pytest.raises(ValueError):
        store.list(limit=-1)


def test_update_labels(store):
    s = make_sample(2)
    store.put(s)
    old_files = files_of(store)
    human = np.full(s.labels.shape, 7, np.uint8)
    assert store.update_labels(s.frame_uuid, human, "human") is True
    got = store.get(s.frame_uuid)
    np.testing.assert_array_equal(got.labels, human)
    np.testing.assert_array_equal(got.edge_labels, s.edge_labels)
    assert got.label_source == "human" and store.count(label_source="human") == 1
    assert store.get(s.frame_uuid).label_confidence is None   # human labels are certain
    new_files = files_of(store)
    if isinstance(store, SqliteSampleStore):   # the replaced labels file is gone, and so is the old confidence
        assert len(new_files) == len(old_files) - (s.label_confidence is not None)
    assert store.update_labels("unknown-uuid", human, "human") is False
    with pytest.raises(ValueError, match="labels must be"):
        store.update_labels(s.frame_uuid, human[:-1], "human")
    with pytest.raises(ValueError, match="label_source"):
        store.update_labels(s.frame_uuid, human, "oracle")
    assert files_of(store) == new_files


def test_update_labels_with_confidence(store):
    s = make_sample(1)
    assert s.label_confidence is not None
    store.put(s)
    human = np.full(s.labels.shape, 3, np.uint8)
    conf = np.full(s.labels.shape, 200, np.uint8)
    assert store.update_labels(s.frame_uuid, human, "sam", conf) is True
    got = store.get(s.frame_uuid)
    np.testing.assert_array_equal(got.label_confidence, conf)
    assert store.list()[0].has_label_confidence
    # New labels without a confidence are taken as certain: the old confidence goes.
    assert store.update_labels(s.frame_uuid, human, "human") is True
    assert store.get(s.frame_uuid).label_confidence is None
    assert not store.list()[0].has_label_confidence
    assert not any("label_confidence" in p.name for p in files_of(store))
    with pytest.raises(ValueError, match="confidence must be"):
        store.update_labels(s.frame_uuid, human, "sam", conf[:-1])


def test_a_version_1_store_is_migrated_in_place(tmp_path):
    """A store written before label_confidence existed opens, keeps its samples and takes new ones."""
    import sqlite3
    old = make_sample(3)
    old.label_confidence = None
    with SqliteSampleStore(tmp_path) as s:
        s.put(old)
    conn = sqlite3.connect(tmp_path / SqliteSampleStore.DB_NAME)
    conn.execute("ALTER TABLE samples DROP COLUMN label_confidence_path")   # as version 1 wrote it
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with SqliteSampleStore(tmp_path) as s:
        assert_same_sample(s.get(old.frame_uuid), old)
        new = make_sample(4)
        assert new.label_confidence is not None and s.put(new) is True
        assert_same_sample(s.get(new.frame_uuid), new)
    conn = sqlite3.connect(tmp_path / SqliteSampleStore.DB_NAME)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(SampleStoreError, match="schema version 99"):
        SqliteSampleStore(tmp_path)


def test_delete(store):
    a, b = make_sample(1), make_sample(2)
    store.put(a), store.put(b)
    assert store.delete(a.frame_uuid) is True
    assert store.delete(a.frame_uuid) is False
    assert a.frame_uuid not in store and b.frame_uuid in store
    assert store.get(a.frame_uuid) is None and store.count() == 1
    assert all(a.frame_uuid not in str(p) for p in files_of(store))
    assert store.put(a) is True  # a deleted uuid can be stored again
    assert_same_sample(store.get(a.frame_uuid), a)


def test_persistence_across_reopen(spec):
    samples = [make_sample(i) for i in range(6)]
    with open_spec(spec) as s:
        for x in samples:
            s.put(x)
        s.update_labels(samples[0].frame_uuid, np.zeros((12, 16), np.uint8), "human")
    with open_spec(spec) as s:
        assert s.count() == 6 and getattr(s, "orphan_files_removed", 0) == 0
        for x in samples[1:]:
            assert_same_sample(s.get(x.frame_uuid), x)
        assert s.get(samples[0].frame_uuid).label_source == "human"
        assert s.put(make_sample(3, variant=2)) is False


@pytest.mark.parametrize("change, message", [
    ({"frame_uuid": "../escape"}, "frame_uuid"),
    ({"frame_uuid": "x"}, "frame_uuid"),
    ({"rgb": np.zeros((12, 16, 3), np.float32)}, "rgb"),
    ({"rgb": np.zeros((12, 16), np.uint8)}, "rgb"),
    ({"labels": np.zeros((12, 15), np.uint8)}, "labels"),
    ({"edge_labels": np.zeros((12, 16), np.int32)}, "edge_labels"),
    ({"depth_m": np.zeros((12, 16), np.uint16)}, "depth_m"),
    ({"label_source": "guess"}, "label_source"),
    ({"tags": {"task": 3}}, "tags"),
    ({"stamp_ns": 1.5}, "stamp_ns"),
    ({"robot_id": None}, "robot_id"),
    ({"raw_payload": "text"}, "raw_payload"),
])
def test_invalid_samples_are_rejected_before_anything_is_written(store, change, message):
    s = make_sample(1)
    for k, v in change.items():
        setattr(s, k, v)
    with pytest.raises(ValueError, match=message):
        store.put(s)
    assert store.count() == 0 and files_of(store) == []
    assert store.stats()["rejected_invalid"] == 1


@pytest.fixture
def sqlite_store(tmp_path):
    with SqliteSampleStore(tmp_path / "store") as s:
        yield s


def test_missing_file_is_a_clear_error(sqlite_store):
    store = sqlite_store
    s = make_sample(1)
    store.put(s)
    next(p for p in sample_files(store.directory) if p.name.startswith("rgb.")).unlink()
    with pytest.raises(SampleStoreError, match="missing"):
        store.get(s.frame_uuid)


def test_failed_commit_removes_the_files(sqlite_store, monkeypatch):
    store = sqlite_store
    import sqlite3

    def failing_insert(*args):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(SqliteSampleStore, "_insert_row", failing_insert)
    with pytest.raises(SampleStoreError, match="disk I/O error"):
        store.put(make_sample(1))
    monkeypatch.undo()
    assert store.count() == 0 and sample_files(store.directory) == []
    assert store.stats()["write_failures"] == 1
    assert store.put(make_sample(1)) is True


def test_failed_file_write_leaves_nothing(sqlite_store, monkeypatch):
    store = sqlite_store
    real_replace = os.replace
    calls = []

    def replace_failing_on_third(src, dst):
        calls.append(dst)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_failing_on_third)
    with pytest.raises(SampleStoreError, match="No space left"):
        store.put(make_sample(1))
    monkeypatch.undo()
    assert store.count() == 0 and sample_files(store.directory) == []
    assert store.put(make_sample(1)) is True


# ---------------------------------------------------------------------------------------
# several processes, and a crash
# ---------------------------------------------------------------------------------------
def run_script(body: str, *args, timeout: float = 120) -> subprocess.Popen:
    script = "\n".join([
        "import json, os, sys, threading, time", "from pathlib import Path", "import numpy as np",
        "from cloud_bridge.sample_store import Sample, SqliteSampleStore",
        "from cloud_bridge.pg_store import PgSampleStore", "from cloud_bridge.ops_config import PostgresConfig",
        inspect.getsource(make_sample), inspect.getsource(open_spec), textwrap.dedent(body)])
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


PUT_ALL = """
    spec, go = json.loads(sys.argv[1]), Path(sys.argv[2])
    while not go.exists():
        time.sleep(0.001)
    store = open_spec(spec)  # both processes open a fresh store at once (and create its schema)
    results = []
    def put_all(order):
        for i in order:
            results.append(store.put(make_sample(i)))
    threads = [threading.Thread(target=put_all, args=(order,))
               for order in (range(50), range(49, -1, -1))]
    for t in threads: t.start()
    for t in threads: t.join()
    print(sum(results), len(results))
"""


def test_two_processes_put_the_same_uuids_concurrently(tmp_path, spec):
    go = tmp_path / "go"
    procs = [run_script(PUT_ALL, json.dumps(spec), go) for _ in range(2)]
    go.touch()
    outputs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outputs.append(tuple(map(int, out.split())))
    assert sum(stored for stored, _ in outputs) == 50
    assert all(attempts == 100 for _, attempts in outputs)
    with open_spec(spec) as s:
        assert s.count() == 50 and getattr(s, "orphan_files_removed", 0) == 0
        for i in range(50):
            assert_same_sample(s.get(make_sample(i).frame_uuid), make_sample(i))
        if spec["backend"] != "sqlite":
            return
        directory = Path(spec["directory"])
        # Exactly the winners' files: the losers deleted their own.
        expected = sum(3 + sum(getattr(make_sample(i), f) is not None
                               for f in ("depth_m", "raw_payload", "label_confidence"))
                       for i in range(50))
        assert len(sample_files(directory)) == expected


CRASH_BEFORE_COMMIT = """
    store = SqliteSampleStore(sys.argv[1])
    store.put(make_sample(1))
    # The process dies after the sample's files are written, before its row is committed.
    SqliteSampleStore._insert_row = lambda self, sample, paths: os._exit(3)
    store.put(make_sample(3))
"""


def test_crash_between_file_write_and_commit(tmp_path):
    p = run_script(CRASH_BEFORE_COMMIT, tmp_path)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 3, err
    crashed = make_sample(3)
    orphans = [f for f in sample_files(tmp_path) if crashed.frame_uuid in str(f)]
    assert len(orphans) == 5  # rgb, depth, edge labels, labels, raw: all written, no row

    with SqliteSampleStore(tmp_path) as s:
        assert crashed.frame_uuid not in s and s.count() == 1
        assert s.orphan_files_removed == 5
        assert not any(f.exists() for f in orphans)
        assert not (tmp_path / "samples" / crashed.frame_uuid[:2] / crashed.frame_uuid).exists()
        assert_same_sample(s.get(make_sample(1).frame_uuid), make_sample(1))
        assert s.put(crashed) is True
        assert_same_sample(s.get(crashed.frame_uuid), crashed)


def test_orphan_clean_up_waits_while_another_writer_is_mid_put(tmp_path):
    with SqliteSampleStore(tmp_path) as s:
        s.put(make_sample(1))
    pending = tmp_path / "samples" / "ab" / "abcdef" / "rgb.0123.png"
    pending.parent.mkdir(parents=True)
    pending.write_bytes(b"not yet committed")
    with open(tmp_path / SqliteSampleStore.LOCK_NAME, "a+b") as writer:
        fcntl.flock(writer, fcntl.LOCK_SH)  # a replica between its file writes and its commit
        with SqliteSampleStore(tmp_path) as s:
            assert pending.exists() and s.orphan_files_removed == 0
    with SqliteSampleStore(tmp_path) as s:
        assert not pending.exists() and s.orphan_files_removed == 1 and s.count() == 1


def test_closed_store_says_so(spec):
    s = open_spec(spec)
    s.close()
    with pytest.raises(SampleStoreError, match="closed"):
        s.count()
