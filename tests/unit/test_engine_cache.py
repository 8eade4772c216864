"""The TensorRT engine cache: keys, round trips, crash safety, corruption handling."""
from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pytest

from rfnet.engines.engine_cache import (EngineCache, EngineKey, calibration_sha256,
                                        default_cache_dir, write_atomic)

BASE = EngineKey(
    onnx_sha256="a" * 64,
    tensorrt_version="10.16.1.11",
    gpu_name="Orin",
    compute_capability="8.7",
    precision="fp16",
    input_shapes=(("rgb", (1, 3, 480, 640)), ("depth", (1, 480, 640))),
)
INT8 = dataclasses.replace(BASE, precision="int8", calibration_sha256="c" * 64)


@pytest.mark.parametrize("change", [
    {"onnx_sha256": "b" * 64},
    {"tensorrt_version": "10.16.0.72"},
    {"gpu_name": "NVIDIA H100"},
    {"compute_capability": "9.0"},
    {"precision": "fp32"},
    {"input_shapes": (("rgb", (1, 3, 192, 256)), ("depth", (1, 192, 256)))},
    {"input_shapes": (("rgb", (1, 3, 480, 640)),)},
], ids=lambda c: next(iter(c)))
def test_every_component_changes_the_digest(change):
    assert dataclasses.replace(BASE, **change).digest() != BASE.digest()


def test_int8_key_depends_on_calibration_data():
    assert INT8.digest() != BASE.digest()
    assert dataclasses.replace(INT8, calibration_sha256="d" * 64).digest() != INT8.digest()


def test_digest_is_stable_and_shape_container_agnostic():
    same = dataclasses.replace(BASE, input_shapes=[["rgb", [1, 3, 480, 640]],
                                                   ["depth", [1, 480, 640]]])
    assert same.digest() == BASE.digest()
    assert len(BASE.digest()) == 64


def test_key_validation():
    with pytest.raises(ValueError, match="precision"):
        dataclasses.replace(BASE, precision="bf16")
    with pytest.raises(ValueError, match="calibration"):
        dataclasses.replace(BASE, precision="int8")
    with pytest.raises(ValueError, match="calibration"):
        dataclasses.replace(BASE, calibration_sha256="c" * 64)


def test_calibration_sha256_sees_values_shapes_and_missing_inputs():
    rgb = np.zeros((1, 3, 4, 4), np.float32)
    depth = np.zeros((1, 4, 4), np.float32)
    ref = calibration_sha256([(rgb, depth)])
    assert calibration_sha256([(rgb.copy(), depth.copy())]) == ref
    assert calibration_sha256(iter([(rgb, depth)])) == ref
    changed = rgb.copy()
    changed[0, 0, 0, 0] = 1
    assert calibration_sha256([(changed, depth)]) != ref
    assert calibration_sha256([(rgb.reshape(1, 3, 2, 8), depth)]) != ref
    assert calibration_sha256([(rgb, None)]) != ref
    assert calibration_sha256([(rgb, depth), (rgb, depth)]) != ref


def test_round_trip_and_layout(tmp_path):
    cache = EngineCache(tmp_path)
    blob = b"\x00serialized engine\xff" * 100
    path = cache.put(BASE, blob, build_seconds=12.345)
    assert path == tmp_path / f"{BASE.digest()}.engine" == cache.path_for(BASE)
    assert cache.get(BASE) == blob
    meta = json.loads((tmp_path / f"{BASE.digest()}.json").read_text())
    assert meta["key"]["gpu_name"] == "Orin"
    assert meta["key"]["precision"] == "fp16"
    assert meta["key"]["input_shapes"] == {"rgb": [1, 3, 480, 640], "depth": [1, 480, 640]}
    assert meta["build_seconds"] == 12.345
    assert meta["built_at"].endswith("Z")
    assert cache.get(INT8) is None  # other key: miss


def test_put_replaces_an_existing_entry(tmp_path):
    cache = EngineCache(tmp_path)
    cache.put(BASE, b"old")
    cache.put(BASE, b"new")
    assert cache.get(BASE) == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"{BASE.digest()}.engine", f"{BASE.digest()}.json"])


def test_cache_dir_created_on_demand(tmp_path):
    cache_dir = tmp_path / "does" / "not" / "exist"
    cache = EngineCache(cache_dir)
    assert cache.get(BASE) is None
    assert not cache_dir.exists()  # a lookup never creates anything
    cache.put(BASE, b"engine")
    assert cache.get(BASE) == b"engine"


def test_leftover_temp_file_from_a_crash_is_not_an_entry(tmp_path, monkeypatch):
    cache = EngineCache(tmp_path)

    def crash(*_):
        raise KeyboardInterrupt  # e.g. the process is stopped while writing

    monkeypatch.setattr("rfnet.engines.engine_cache.os.replace", crash)
    with pytest.raises(KeyboardInterrupt):
        cache.put(BASE, b"half written")
    monkeypatch.undo()
    assert cache.get(BASE) is None
    assert not cache.path_for(BASE).exists()

    # A temp file left by a hard kill (no cleanup ran) is ignored as well.
    (tmp_path / f".{BASE.digest()}.engine.x1y2.tmp").write_bytes(b"partial")
    assert cache.get(BASE) is None
    cache.put(BASE, b"complete")
    assert cache.get(BASE) == b"complete"


def test_crash_between_engine_and_metadata_is_a_miss(tmp_path, caplog):
    cache = EngineCache(tmp_path)
    write_atomic(cache.path_for(BASE), b"engine without its json")
    with caplog.at_level(logging.WARNING):
        assert cache.get(BASE) is None
    assert "rebuilt" in caplog.text
    assert not cache.path_for(BASE).exists()


@pytest.mark.parametrize("damage", ["truncate", "flip", "bad_json", "json_list", "other_key"])
def test_corrupt_entry_is_a_miss_and_removed(tmp_path, caplog, damage):
    cache = EngineCache(tmp_path)
    cache.put(BASE, b"0123456789" * 50)
    engine, meta = cache.path_for(BASE), cache.meta_path_for(BASE)
    if damage == "truncate":
        engine.write_bytes(engine.read_bytes()[:100])
    elif damage == "flip":
        data = bytearray(engine.read_bytes())
        data[7] ^= 0xFF
        engine.write_bytes(bytes(data))
    elif damage == "bad_json":
        meta.write_text("{not json")
    elif damage == "json_list":
        meta.write_text("[]")
    else:
        cache.put(INT8, b"0123456789" * 50)
        meta.write_bytes(cache.meta_path_for(INT8).read_bytes())
    with caplog.at_level(logging.WARNING):
        assert cache.get(BASE) is None
    assert "discarding invalid TensorRT engine cache entry" in caplog.text
    assert not engine.exists() and not meta.exists()
    cache.put(BASE, b"rebuilt")
    assert cache.get(BASE) == b"rebuilt"


def test_unreadable_entry_is_a_miss(tmp_path):
    cache = EngineCache(tmp_path)
    cache.path_for(BASE).mkdir(parents=True)  # exists but cannot be read as a file
    assert cache.get(BASE) is None


def test_invalidate_keeps_the_calibration_table(tmp_path):
    cache = EngineCache(tmp_path)
    cache.put(INT8, b"engine")
    write_atomic(cache.calibration_path(INT8), b"table")
    cache.invalidate(INT8)
    assert cache.get(INT8) is None
    assert cache.calibration_path(INT8).read_bytes() == b"table"
    assert cache.calibration_path(INT8).name == f"{INT8.digest()}.calib"


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("RFNET_ENGINE_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("RFNET_ENGINE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x" / "rfnet" / "engines"
