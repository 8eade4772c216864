"""segwire: topics, payload round trips, every limit, and fuzzing of the decoders."""
from __future__ import annotations

import json
import struct
import zlib

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import segwire
from segwire import (
    HardFrame,
    RefinedResult,
    RobotStatus,
    WireError,
    WireLimits,
    decode_hard_frame,
    decode_refined,
    decode_status,
    encode_hard_frame,
    encode_refined,
    encode_status,
)
from segwire.images import jpeg_header, png_header

UUID = "3f2b8c1e-8d4a-4c3e-9b7a-0c1d2e3f4a5b"
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- helpers ------------------------------------------------------------------


def smooth_rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 200 / w, y * 200 / h, 100 + 0 * x], -1) + rng.normal(0, 2, (h, w, 3))
    rgb[h // 3 :, w // 2 :] = (220, 40, 40)  # an edge
    return np.clip(rgb, 0, 255).astype(np.uint8)


def make_frame(h: int = 24, w: int = 32, depth: bool = True, **kw) -> HardFrame:
    rng = np.random.default_rng(1)
    mm = rng.integers(1, 65536, (h, w)).astype(np.uint16)
    depth_m = (mm.astype(np.float32) / 1000).astype(np.float32)
    depth_m.flat[:4] = [np.nan, np.inf, -1.0, 0.0]
    labels = np.zeros((h, w), np.uint8)
    labels[h // 2 :] = 7
    labels[0, 0] = 255
    fields = dict(
        robot_id="dog-01",
        frame_uuid=UUID,
        stamp_ns=1_700_000_000_123_456_789,
        frame_id="camera_color_optical_frame",
        model_version="rfnet-2024.11+ab12",
        mining_policy="entropy",
        mining_score=0.8125,
        rgb=smooth_rgb(h, w),
        depth_m=depth_m if depth else None,
        edge_labels=labels,
        extra={"note": "Hund 🐕", "n": 3, "ok": True, "none": None, "x": -1.5},
    )
    fields.update(kw)
    return HardFrame(**fields)


def make_refined(h: int = 24, w: int = 32) -> RefinedResult:
    labels = (np.arange(h * w).reshape(h, w) % 5).astype(np.uint8)
    return RefinedResult("dog-01", UUID, 42, "cam", "rfnet-1", "sam_vit_b+logit_vote", labels, "bridge-a")


def metadata(data: bytes) -> dict:
    (length,) = struct.unpack_from("<I", data, 6)
    return json.loads(data[10 : 10 + length])


def sections_of(data: bytes) -> dict[int, bytes]:
    """Section id -> encoded image, read by the spec's layout."""
    (length,) = struct.unpack_from("<I", data, 6)
    pos = 10 + length
    count, pos, out = data[pos], pos + 1, {}
    for _ in range(count):
        section_id, _codec, size = struct.unpack_from("<BBI", data, pos)
        out[section_id] = data[pos + 6 : pos + 6 + size]
        pos += 6 + size
    assert pos == len(data)
    return out


def depth_units_on_the_wire(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(sections_of(data)[2], np.uint8), cv2.IMREAD_UNCHANGED)


def build(meta, sections, kind=1, version=1, magic=b"SEGW", meta_bytes=None) -> bytes:
    """The layout written independently of segwire, as another implementation would."""
    mb = json.dumps(meta).encode() if meta_bytes is None else meta_bytes
    out = magic + struct.pack("<BBI", version, kind, len(mb)) + mb + bytes([len(sections)])
    for section_id, codec_id, blob in sections:
        out += struct.pack("<BBI", section_id, codec_id, len(blob)) + blob
    return out


def png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def jpeg(image: np.ndarray, *params: int) -> bytes:
    return cv2.imencode(".jpg", image, list(params))[1].tobytes()


def png_claiming(width: int, height: int, bits: int = 8, colour_type: int = 0) -> bytes:
    """A well-formed PNG header for an image far larger than its few bytes of data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, bits, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


HARD_META = {
    "robot_id": "dog-01",
    "frame_uuid": UUID,
    "stamp_ns": 5,
    "frame_id": "cam",
    "model_version": "m",
    "mining_policy": "p",
    "mining_score": 0.5,
}
RGB_4x5 = png(np.zeros((4, 5, 3), np.uint8))
LABELS_4x5 = png(np.zeros((4, 5), np.uint8))


def hard(meta=None, sections=None, **kw) -> bytes:
    sections = [(1, 2, RGB_4x5), (3, 2, LABELS_4x5)] if sections is None else sections
    return build(HARD_META if meta is None else meta, sections, **kw)


def assert_frames_equal(a: HardFrame, b: HardFrame, rgb_atol: int = 0) -> None:
    for name in ("robot_id", "frame_uuid", "stamp_ns", "frame_id", "model_version", "mining_policy",
                 "mining_score", "extra"):
        assert getattr(a, name) == getattr(b, name), name
    assert a.rgb.shape == b.rgb.shape
    assert np.abs(a.rgb.astype(int) - b.rgb.astype(int)).max() <= rgb_atol
    assert np.array_equal(a.edge_labels, b.edge_labels)
    assert (a.depth_m is None) == (b.depth_m is None)
    if a.depth_m is not None:
        assert np.array_equal(a.depth_m, b.depth_m)


def assert_valid_hard(frame: HardFrame, depth_unit_mm: int = 1) -> None:
    """A decoded frame must be a frame the encoder accepts and that round-trips
    (in the depth unit it came in: a coarser unit reaches beyond 65.535 m)."""
    assert_frames_equal(frame, decode_hard_frame(encode_hard_frame(frame, "png", depth_unit_mm=depth_unit_mm)))


# --- topics -------------------------------------------------------------------


def test_topics():
    assert segwire.PROTOCOL_VERSION == 1
    assert segwire.hard_topic("dog-01") == "seg/v1/dog-01/hard"
    assert segwire.refined_topic("dog_01") == "seg/v1/dog_01/refined"
    assert segwire.status_topic("D0G") == "seg/v1/D0G/status"
    assert segwire.shared_hard_subscription("bridges") == "$share/bridges/seg/v1/+/hard"
    for make in (segwire.hard_topic, segwire.refined_topic, segwire.status_topic):
        assert segwire.robot_id_from_topic(make("dog-01")) == "dog-01"


@pytest.mark.parametrize(
    "topic",
    [
        "seg/v1/+/hard",
        "seg/v1/#",
        "$share/bridges/seg/v1/+/hard",
        "seg/v2/dog/hard",
        "seg/v1/dog/models",
        "seg/v1/dog/hard/extra",
        "seg/v1/hard",
        "/seg/v1/dog/hard",
        "seg/v1//hard",
        "seg/v1/models/hard",
        "",
        None,
    ],
)
def test_robot_id_from_bad_topic(topic):
    with pytest.raises(WireError):
        segwire.robot_id_from_topic(topic)


@pytest.mark.parametrize(
    "robot_id", ["", "x" * 65, "a/b", "a+b", "#", "dog 1", "hünd", "$SYS", "a.b", "models", 7, None]
)
def test_bad_robot_ids(robot_id):
    with pytest.raises(WireError, match="robot id"):
        segwire.validate_robot_id(robot_id)
    with pytest.raises(WireError):
        segwire.hard_topic(robot_id)


def test_robot_id_length_bounds_and_bad_group():
    assert segwire.validate_robot_id("x" * 64) == "x" * 64
    assert segwire.validate_robot_id("_") == "_"
    for group in ("", "a/b", "+", "g#"):
        with pytest.raises(WireError, match="group"):
            segwire.shared_hard_subscription(group)


# --- round trips --------------------------------------------------------------


def test_hard_frame_png_round_trip_is_exact():
    frame = make_frame()
    data = encode_hard_frame(frame, rgb_format="png")
    assert data[:4] == b"SEGW" and data[4:6] == b"\x01\x01"
    out = decode_hard_frame(data)
    assert out.depth_m.dtype == np.float32
    expected_depth = frame.depth_m.copy()
    expected_depth.flat[:4] = 0.0  # NaN, inf, -1, 0 all decode to "no return"
    assert_frames_equal(out, HardFrame(**{**vars(frame), "depth_m": expected_depth}))


def test_metadata_is_only_scalars_and_follows_the_spec():
    data = encode_hard_frame(make_frame())
    meta = metadata(data)
    assert meta["extra"]["note"] == "Hund 🐕"
    assert set(meta) == set(HARD_META) | {"extra"}
    assert all(not isinstance(v, (list, dict)) for k, v in meta.items() if k != "extra")
    assert b"\xf0\x9f\x90\x95" in data  # UTF-8 JSON, not \u escapes


def test_hard_frame_jpeg_round_trip_within_tolerance():
    frame = make_frame(48, 64)
    for quality in (90, 80):
        out = decode_hard_frame(encode_hard_frame(frame, jpeg_quality=quality))
        diff = np.abs(out.rgb.astype(int) - frame.rgb.astype(int))
        assert diff.mean() < 4 and out.rgb.dtype == np.uint8
        assert np.array_equal(out.edge_labels, frame.edge_labels)
    assert len(encode_hard_frame(frame, jpeg_quality=50)) < len(encode_hard_frame(frame, jpeg_quality=95))


def test_depth_millimetres_rounding_clipping_and_invalid():
    depth = np.array([[0.0004, 0.0015, 1.2344, 1.2346, 65.535, 70.0, np.nan, -np.inf, -0.5, 0.0]], np.float32)
    frame = make_frame(1, 10, rgb=np.zeros((1, 10, 3), np.uint8), depth_m=depth, edge_labels=np.zeros((1, 10), np.uint8))
    out = decode_hard_frame(encode_hard_frame(frame, "png")).depth_m
    expected_mm = [1, 2, 1234, 1235, 65535, 65535, 0, 0, 0, 0]  # valid depth never becomes "invalid"
    assert np.array_equal(np.rint(out[0] * 1000).astype(int), expected_mm)
    assert np.array_equal(out, (np.array([expected_mm], np.float32) / 1000).astype(np.float32))


def test_depth_is_exact_to_the_millimetre_over_the_whole_range():
    mm = np.arange(0, 65536, dtype=np.uint16).reshape(256, 256)
    depth = mm.astype(np.float32) / np.float32(1000)
    frame = make_frame(256, 256, rgb=np.zeros((256, 256, 3), np.uint8), depth_m=depth,
                       edge_labels=np.zeros((256, 256), np.uint8))
    out = decode_hard_frame(encode_hard_frame(frame)).depth_m
    assert np.array_equal(np.rint(out.astype(np.float64) * 1000).astype(np.uint16), mm)
    assert np.array_equal(out, depth)


def depth_frame(depth: np.ndarray) -> HardFrame:
    h, w = depth.shape
    return make_frame(h, w, rgb=np.zeros((h, w, 3), np.uint8), depth_m=depth.astype(np.float32),
                      edge_labels=np.zeros((h, w), np.uint8))


def metres(units, unit_mm: int) -> np.ndarray:
    """The spec's decoding, value * unit / 1000, correctly rounded to float32."""
    exact = np.asarray(units, np.float64) * unit_mm / 1000
    return exact.astype(np.float32)


@pytest.mark.parametrize("unit", [1, 2, 7, 10, 20, 39, 1000])
def test_depth_unit_round_trip_is_exact_to_the_unit(unit):
    values = np.arange(0, 65536, 61, dtype=np.int64)
    values = np.concatenate([values, [1, 2, 65534, 65535]])
    depth = metres(values, unit)
    depth[values == 0] = np.nan
    invalid = np.array([np.nan, np.inf, -np.inf, -1.0, 0.0], np.float32)
    # clamp: valid depth far nearer than one unit is 1 unit, never "invalid"; beyond the range is 65535
    near, far = np.float32(1e-6), np.float32(65535.6 * unit / 1000 + 1)
    # rounding to the nearest unit: 0.4 and 0.6 of a unit past 100 units
    between = metres([100.4, 100.6], unit)
    depth = np.concatenate([depth, invalid, [near, far], between]).reshape(1, -1)
    expected_units = np.concatenate([values, [0] * 5, [1, 65535], [100, 101]])

    data = encode_hard_frame(depth_frame(depth), "png", depth_unit_mm=unit)
    assert np.array_equal(depth_units_on_the_wire(data)[0], expected_units)
    assert metadata(data).get("depth_unit_mm", 1) == unit
    out = decode_hard_frame(data).depth_m
    assert out.dtype == np.float32
    assert np.array_equal(out[0], metres(expected_units, unit))  # invalid is 0.0, not NaN
    assert out.max() == np.float32(65535 * unit / 1000)  # the largest representable depth
    # encoding the decoded depth again in the same unit changes nothing
    again = encode_hard_frame(decode_hard_frame(data), "png", depth_unit_mm=unit)
    assert again == data


def test_depth_unit_1_is_the_millimetre_encoding_without_the_key():
    frame = make_frame()
    data = encode_hard_frame(frame)
    assert data == encode_hard_frame(frame, depth_unit_mm=1) == encode_hard_frame(frame, depth_unit_mm=np.int64(1))
    assert "depth_unit_mm" not in metadata(data)
    valid = np.isfinite(frame.depth_m) & (frame.depth_m > 0)
    expected_mm = np.where(valid, np.rint(np.where(valid, frame.depth_m, 0) * 1000.0), 0)
    assert np.array_equal(depth_units_on_the_wire(data), expected_mm)
    assert np.array_equal(decode_hard_frame(data).depth_m, metres(expected_mm, 1))


def test_depth_unit_absent_or_present_in_a_hand_built_payload():
    units = np.array([[0, 1, 2, 1234, 65535]] * 4, np.uint16)
    sections = [(1, 2, RGB_4x5), (2, 2, png(units)), (3, 2, LABELS_4x5)]
    absent = decode_hard_frame(hard(sections=sections)).depth_m
    assert np.array_equal(absent, units.astype(np.float32) / np.float32(1000))  # millimetres
    for unit in (1, 20, 1000):
        out = decode_hard_frame(hard({**HARD_META, "depth_unit_mm": unit}, sections)).depth_m
        assert np.array_equal(out, metres(units, unit))
    assert decode_hard_frame(hard({**HARD_META, "depth_unit_mm": 20}, sections)).depth_m[0, 4] == np.float32(1310.7)


def test_depth_unit_without_depth():
    frame = make_frame(depth=False)
    data = encode_hard_frame(frame, depth_unit_mm=10)
    assert data == encode_hard_frame(frame) and "depth_unit_mm" not in metadata(data)
    # a receiver ignores a valid unit when there is no depth section, but still checks it
    assert decode_hard_frame(hard({**HARD_META, "depth_unit_mm": 10})).depth_m is None
    with pytest.raises(WireError, match="depth_unit_mm"):
        decode_hard_frame(hard({**HARD_META, "depth_unit_mm": 0}))


def test_numpy_integer_depth_unit_is_written_as_a_json_integer():
    data = encode_hard_frame(make_frame(), depth_unit_mm=np.uint16(10))
    assert b'"depth_unit_mm":10' in data and metadata(data)["depth_unit_mm"] == 10


BAD_UNITS = [0, -1, 1001, 2**64, 10.0, 1.5, True, False, "10", None, [10]]


@pytest.mark.parametrize("unit", BAD_UNITS + [np.float32(10)])
@pytest.mark.parametrize("depth", [True, False])
def test_bad_depth_unit_on_encode(unit, depth):
    with pytest.raises(WireError, match="depth_unit_mm"):
        encode_hard_frame(make_frame(depth=depth), depth_unit_mm=unit)


@pytest.mark.parametrize("unit", BAD_UNITS + [1e3, {"mm": 10}])
def test_bad_depth_unit_on_decode(unit, no_imdecode):
    depth = png(np.ones((4, 5), np.uint16))
    data = hard({**HARD_META, "depth_unit_mm": unit}, [(1, 2, RGB_4x5), (2, 2, depth), (3, 2, LABELS_4x5)])
    with pytest.raises(WireError, match="depth_unit_mm"):
        decode_hard_frame(data)


def test_hard_frame_without_depth_or_extra():
    frame = make_frame(depth=False, extra={})
    data = encode_hard_frame(frame)
    assert "extra" not in metadata(data)
    out = decode_hard_frame(data)
    assert out.depth_m is None and out.extra == {}


def test_non_contiguous_arrays_encode():
    frame = make_frame()
    # valid everywhere, so it round-trips unchanged
    depth = np.where(np.isfinite(frame.depth_m) & (frame.depth_m > 0), frame.depth_m, np.float32(1))
    flipped = make_frame(rgb=frame.rgb[:, ::-1], edge_labels=frame.edge_labels[::-1], depth_m=depth[:, ::-1])
    assert_frames_equal(decode_hard_frame(encode_hard_frame(flipped, "png")), flipped)


def test_refined_round_trip():
    result = make_refined()
    data = encode_refined(result)
    assert data[4:6] == b"\x01\x02"
    out = decode_refined(memoryview(data))  # any bytes-like payload
    for name in ("robot_id", "frame_uuid", "stamp_ns", "frame_id", "edge_model_version", "refiner", "bridge_id"):
        assert getattr(out, name) == getattr(result, name)
    assert np.array_equal(out.labels, result.labels)


def test_status_round_trip_and_shape():
    status = RobotStatus("dog-01", "online", 12, "rfnet-1", {"frames": 10, "hard": 2})
    data = encode_status(status)
    assert json.loads(data)["protocol_version"] == 1
    assert decode_status(data) == status == decode_status(bytearray(data))
    offline = RobotStatus("dog-01", "offline", 12, "rfnet-1")
    assert decode_status(encode_status(offline)) == offline


def test_independently_written_payload_decodes():
    """The module docstring's layout, written by hand, is what the decoder reads."""
    rgb = smooth_rgb(4, 5)
    mm = np.array([[0, 1, 2, 3, 65535]] * 4, np.uint16)
    labels = np.full((4, 5), 3, np.uint8)
    sections = [(3, 2, png(labels)), (2, 2, png(mm)), (1, 2, png(rgb[..., ::-1].copy()))]  # any order
    frame = decode_hard_frame(build({**HARD_META, "unknown_future_key": [1, 2]}, sections))
    assert np.array_equal(frame.rgb, rgb)
    assert np.array_equal(frame.depth_m, mm.astype(np.float32) / np.float32(1000))
    assert np.array_equal(frame.edge_labels, labels)
    assert frame.mining_score == 0.5 and frame.extra == {}


def test_numpy_scalars_are_stored_as_python_numbers():
    frame = make_frame(stamp_ns=np.int64(7), mining_score=np.float32(0.25),
                       extra={"i": np.uint8(3), "f": np.float32(0.5), "b": np.bool_(True)})
    assert type(frame.stamp_ns) is int and type(frame.mining_score) is float
    assert frame.extra == {"i": 3, "f": 0.5, "b": True} and type(frame.extra["b"]) is bool
    assert decode_hard_frame(encode_hard_frame(frame)).extra == frame.extra
    status = RobotStatus("d", "online", np.int64(1), "m", {"n": np.int32(4)})
    assert type(status.counters["n"]) is int and decode_status(encode_status(status)) == status


def test_integral_mining_score_is_a_float():
    frame = decode_hard_frame(hard({**HARD_META, "mining_score": 1}))
    assert frame.mining_score == 1.0 and isinstance(frame.mining_score, float)


# --- construction and encoder arguments ---------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        ({"frame_uuid": "not-a-uuid"}, "not a UUID"),
        ({"frame_uuid": UUID.upper()}, "canonical"),
        ({"frame_uuid": UUID.replace("-", "")}, "canonical"),
        ({"robot_id": "dog/1"}, "robot id"),
        ({"stamp_ns": -1}, "stamp_ns"),
        ({"stamp_ns": 2**63}, "stamp_ns"),
        ({"stamp_ns": 1.5}, "stamp_ns"),
        ({"stamp_ns": True}, "stamp_ns"),
        ({"mining_score": float("nan")}, "finite"),
        ({"mining_score": "0.5"}, "number"),
        ({"frame_id": None}, "frame_id"),
        ({"model_version": "\ud800"}, "Unicode"),
        ({"extra": {"pixels": [1, 2, 3]}}, "extra"),
        ({"extra": {"big": 2**64}}, "extra"),
        ({"extra": {"a": np.zeros(3)}}, "extra"),
        ({"extra": {"c": 1j}}, "extra"),
        ({"extra": {1: "x"}}, "extra key"),
        ({"extra": []}, "object"),
        ({"rgb": np.zeros((24, 32, 3), np.float32)}, "uint8"),
        ({"rgb": np.zeros((24, 32), np.uint8)}, "shape"),
        ({"rgb": np.zeros((0, 32, 3), np.uint8)}, "shape"),
        ({"rgb": [[0]]}, "numpy array"),
        ({"depth_m": np.zeros((24, 32), np.float64)}, "float32"),
        ({"depth_m": np.zeros((24, 31), np.float32)}, "depth_m is 24x31"),
        ({"edge_labels": np.zeros((23, 32), np.uint8)}, "edge_labels is 23x32"),
        ({"edge_labels": np.zeros((24, 32, 1), np.uint8)}, "shape"),
    ],
)
def test_invalid_frames_cannot_be_built(change, message):
    with pytest.raises(WireError, match=message):
        make_frame(**change)


def test_invalid_results_and_statuses_cannot_be_built():
    with pytest.raises(WireError, match="labels"):
        RefinedResult("dog", UUID, 1, "cam", "m", "r", np.zeros((2, 2), np.int32), "b")
    with pytest.raises(WireError, match="state"):
        RobotStatus("dog", "sleeping", 1, "m")
    with pytest.raises(WireError, match="counters"):
        RobotStatus("dog", "online", 1, "m", {"frames": -1})


@pytest.mark.parametrize("kw", [{"rgb_format": "webp"}, {"jpeg_quality": 0}, {"jpeg_quality": 101},
                                {"jpeg_quality": True}, {"jpeg_quality": 90.0}])
def test_bad_encoder_arguments(kw):
    with pytest.raises(WireError):
        encode_hard_frame(make_frame(), **kw)


def test_encoders_refuse_what_decoders_would_reject():
    frame = make_frame()
    with pytest.raises(WireError, match="limit"):
        encode_hard_frame(frame, limits=WireLimits(max_width=31))
    with pytest.raises(WireError, match="limit"):
        encode_hard_frame(frame, limits=WireLimits(max_payload_bytes=100))
    with pytest.raises(WireError, match="metadata is .* above the limit"):
        encode_hard_frame(make_frame(extra={"note": "x" * 70_000}))
    with pytest.raises(WireError, match="limit"):
        encode_refined(make_refined(), limits=WireLimits(max_height=10))
    with pytest.raises(WireError, match="limit"):
        encode_status(RobotStatus("d", "online", 1, "m", {"c" * 70_000: 1}))


# --- limits and malformed payloads --------------------------------------------


def test_total_size_is_checked_first():
    data = encode_hard_frame(make_frame())
    decode_hard_frame(data, WireLimits(max_payload_bytes=len(data)))
    with pytest.raises(WireError, match="above the limit"):
        decode_hard_frame(data, WireLimits(max_payload_bytes=len(data) - 1))
    with pytest.raises(WireError, match=f"payload is {8 * 2**20 + 1} bytes, above the limit"):
        decode_hard_frame(b"junk" + bytes(8 * 2**20 - 3))


def test_metadata_length_limit_before_reading_it():
    declared = 64 * 1024 + 1
    with pytest.raises(WireError, match="metadata length 65537 is above the limit"):
        decode_hard_frame(b"SEGW" + struct.pack("<BBI", 1, 1, declared) + b"{}")
    with pytest.raises(WireError, match="runs past the end"):
        decode_hard_frame(b"SEGW" + struct.pack("<BBI", 1, 1, 1000) + b"{}\x00")
    big = {**HARD_META, "pad": "x" * 100}
    with pytest.raises(WireError, match="above the limit 100"):
        decode_hard_frame(hard(big), WireLimits(max_metadata_bytes=100))


def test_section_length_beyond_data():
    data = bytearray(hard())
    # the last section's length field sits 6 + len(LABELS_4x5) bytes from the end
    struct.pack_into("<I", data, len(data) - len(LABELS_4x5) - 4, len(LABELS_4x5) + 1)
    with pytest.raises(WireError, match=f"declares {len(LABELS_4x5) + 1} bytes but only {len(LABELS_4x5)} remain"):
        decode_hard_frame(bytes(data))
    with pytest.raises(WireError, match="declares 4294967295 bytes"):
        decode_hard_frame(hard(sections=[(1, 2, RGB_4x5)])[:-len(RGB_4x5) - 4] + b"\xff\xff\xff\xff" + RGB_4x5)


def test_too_many_sections_and_trailing_bytes():
    with pytest.raises(WireError, match="3 sections, above the limit 2"):
        decode_hard_frame(hard(sections=[(1, 2, RGB_4x5), (3, 2, LABELS_4x5), (2, 2, b"")]),
                          WireLimits(max_sections=2))
    with pytest.raises(WireError, match="1 bytes after the last section"):
        decode_hard_frame(hard() + b"\0")


@pytest.fixture
def no_imdecode(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("cv2.imdecode called for an image that should have been refused")

    monkeypatch.setattr(cv2, "imdecode", refuse)


def test_png_dims_rejected_before_decode(no_imdecode):
    bomb = png_claiming(100_000, 100_000)
    assert len(bomb) < 100 and png_header(bomb)[:2] == (100_000, 100_000)
    with pytest.raises(WireError, match="100000x100000 .* above the limit 4096x4096"):
        decode_hard_frame(hard(sections=[(1, 2, RGB_4x5), (3, 2, bomb)]))
    with pytest.raises(WireError, match="above the limit"):
        decode_refined(build({}, [(4, 2, png_claiming(5000, 10))], kind=2))


def test_real_decompression_bomb_rejected_before_decode(no_imdecode):
    zeros = np.zeros((2000, 2000), np.uint8)
    blob = png(zeros)
    assert len(blob) < 20_000  # 4 MB of pixels in a few KB
    with pytest.raises(WireError, match="2000x2000 .* above the limit 64x64"):
        decode_hard_frame(hard(sections=[(1, 2, RGB_4x5), (3, 2, blob)]), WireLimits(max_width=64, max_height=64))


def test_jpeg_dims_rejected_before_decode(no_imdecode):
    blob = bytearray(jpeg(np.zeros((4, 5, 3), np.uint8)))
    sof = blob.index(b"\xff\xc0")
    struct.pack_into(">HH", blob, sof + 5, 60_000, 60_000)
    assert jpeg_header(bytes(blob))[:2] == (60_000, 60_000)
    with pytest.raises(WireError, match="60000x60000"):
        decode_hard_frame(hard(sections=[(1, 1, bytes(blob)), (3, 2, LABELS_4x5)]))


@pytest.mark.parametrize("section, kind", [(3, 1), (4, 2)])
@pytest.mark.parametrize("length", [2**32 - 1, 2**31, 1000])
def test_png_chunk_longer_than_the_data_is_refused_before_decode(section, kind, length, no_imdecode):
    # Regression (found by bench/fuzz.py): OpenCV 5's PNG reader spent 15 s refusing a
    # 300-byte PNG whose IDAT declared 4 GB; a bridge or robot stalled on each such message.
    blob = bytearray(png(np.zeros((4, 5), np.uint8)))
    assert blob[37:41] == b"IDAT"
    struct.pack_into(">I", blob, 33, length)
    sections = [(1, 2, RGB_4x5), (3, 2, bytes(blob))] if kind == 1 else [(4, 2, bytes(blob))]
    meta = HARD_META if kind == 1 else {}
    decode = decode_hard_frame if kind == 1 else decode_refined
    with pytest.raises(WireError, match=f"chunk b'IDAT' at byte 33 declares {length} bytes"):
        decode(build(meta, sections, kind=kind))


def test_png_chunk_walk_stops_at_iend_and_needs_whole_chunk_headers(no_imdecode):
    blob = png(np.zeros((4, 5), np.uint8))
    assert png_header(blob + b"anything after IEND")[:2] == (5, 4)
    cut = blob[:blob.index(b"IEND") - 4] + b"\0\0"
    with pytest.raises(WireError, match="truncated chunk header"):
        png_header(cut)


def test_jpeg_header_reader():
    image = smooth_rgb(30, 50)
    assert jpeg_header(jpeg(image)) == (50, 30, 3, 8)
    progressive = jpeg(image, cv2.IMWRITE_JPEG_PROGRESSIVE, 1)
    assert b"\xff\xc2" in progressive and jpeg_header(progressive) == (50, 30, 3, 8)
    grey = jpeg(image[..., 0].copy())
    assert jpeg_header(grey) == (50, 30, 1, 8)
    # fill bytes before a marker and an extra APP segment are legal
    padded = grey[:2] + b"\xff\xff\xff\xed\x00\x04ab" + grey[2:]
    assert jpeg_header(padded) == (50, 30, 1, 8)
    with pytest.raises(WireError, match="start-of-image"):
        jpeg_header(b"\x89PNG")
    with pytest.raises(WireError, match="before the frame header"):
        jpeg_header(b"\xff\xd8\xff\xda\x00\x02")
    with pytest.raises(WireError, match="runs past"):
        jpeg_header(b"\xff\xd8\xff\xe0\x01\x00abc")
    for end in range(len(grey[: grey.index(b"\xff\xc0") + 10])):
        with pytest.raises(WireError):
            jpeg_header(grey[:end])


def test_png_header_reader():
    assert png_header(png(np.zeros((3, 7), np.uint16))) == (7, 3, 1, 16)
    assert png_header(png(np.zeros((3, 7, 3), np.uint8))) == (7, 3, 3, 8)
    with pytest.raises(WireError, match="colour type 3"):
        png_header(png_claiming(4, 4, colour_type=3))
    with pytest.raises(WireError, match="IHDR"):
        png_header(b"\x89PNG\r\n\x1a\n" + bytes(25))


def test_mismatched_image_sizes():
    labels = png(np.zeros((4, 6), np.uint8))
    with pytest.raises(WireError, match=r"differ in size .*\(5, 4\), \(6, 4\)"):
        decode_hard_frame(hard(sections=[(1, 2, RGB_4x5), (3, 2, labels)]))
    depth = png(np.zeros((5, 5), np.uint16))
    with pytest.raises(WireError, match="differ in size"):
        decode_hard_frame(hard(sections=[(1, 2, RGB_4x5), (2, 2, depth), (3, 2, LABELS_4x5)]))


@pytest.mark.parametrize(
    "sections, message",
    [
        ([(1, 2, RGB_4x5)], "lacks section.*EDGE_LABELS"),
        ([(3, 2, LABELS_4x5)], "lacks section.*RGB"),
        ([], "lacks section.*EDGE_LABELS, RGB"),
        ([(1, 2, RGB_4x5), (3, 2, LABELS_4x5), (3, 2, LABELS_4x5)], "twice"),
        ([(1, 2, RGB_4x5), (4, 2, LABELS_4x5)], "section id 4 is not allowed"),
        ([(1, 2, RGB_4x5), (9, 2, LABELS_4x5)], "section id 9 is not allowed"),
        ([(1, 3, RGB_4x5), (3, 2, LABELS_4x5)], "codec id 3"),
        ([(1, 2, RGB_4x5), (3, 1, LABELS_4x5)], "codec id 1 is not allowed for section EDGE_LABELS"),
        ([(1, 1, RGB_4x5), (3, 2, LABELS_4x5)], "start-of-image"),  # PNG bytes labelled JPEG
        ([(1, 2, LABELS_4x5), (3, 2, LABELS_4x5)], "RGB is 1 channel"),
        ([(1, 2, RGB_4x5), (3, 2, RGB_4x5)], "EDGE_LABELS is 3 channel"),
        ([(1, 2, RGB_4x5), (2, 2, LABELS_4x5), (3, 2, LABELS_4x5)], "DEPTH is 1 channel.*of 8 bits, expected 1 of 16"),
        ([(1, 2, RGB_4x5), (3, 2, png_claiming(0, 4))], "empty image"),
        ([(1, 2, RGB_4x5), (3, 2, LABELS_4x5[:40] + bytes(len(LABELS_4x5) - 40))], "PNG"),
    ],
)
def test_bad_sections(sections, message):
    with pytest.raises(WireError, match=message):
        decode_hard_frame(hard(sections=sections))


def test_refined_sections():
    with pytest.raises(WireError, match="lacks section.*REFINED_LABELS"):
        decode_refined(build({}, [], kind=2))
    with pytest.raises(WireError, match="section id 3 is not allowed in a REFINED_RESULT"):
        decode_refined(build({}, [(3, 2, LABELS_4x5)], kind=2))


@pytest.mark.parametrize(
    "data, message",
    [
        (hard(magic=b"SEGX"), "does not start with"),
        (b"", "shorter than the 10-byte header"),
        (b"SEGW\x01\x01\x00\x00\x00", "shorter"),
        (hard(version=2), "protocol version 2"),
        (hard(version=0), "protocol version 0"),
        (hard(kind=2), r"message kind 2, expected 1 \(HARD_FRAME\)"),
        (hard(kind=7), "message kind 7"),
    ],
)
def test_bad_header(data, message):
    with pytest.raises(WireError, match=message):
        decode_hard_frame(data)


def test_decode_refined_rejects_a_hard_frame_and_vice_versa():
    with pytest.raises(WireError, match="expected 2"):
        decode_refined(encode_hard_frame(make_frame()))
    with pytest.raises(WireError, match="expected 1"):
        decode_hard_frame(encode_refined(make_refined()))
    with pytest.raises(WireError):
        decode_status(encode_refined(make_refined()))
    for not_bytes in (None, "SEGW", [1, 2]):
        with pytest.raises(WireError, match="bytes"):
            decode_hard_frame(not_bytes)


def meta_bytes_case(raw: bytes) -> bytes:
    return hard(meta_bytes=raw)


@pytest.mark.parametrize(
    "data, message",
    [
        (hard({k: v for k, v in HARD_META.items() if k != "frame_uuid"}), "lacks frame_uuid"),
        (hard({"robot_id": "dog"}), "lacks frame_uuid, stamp_ns, frame_id"),
        (hard({**HARD_META, "stamp_ns": "5"}), "stamp_ns must be an integer"),
        (hard({**HARD_META, "stamp_ns": 5.0}), "stamp_ns must be an integer"),
        (hard({**HARD_META, "stamp_ns": True}), "stamp_ns must be an integer"),
        (hard({**HARD_META, "stamp_ns": 2**64}), "stamp_ns"),
        (hard({**HARD_META, "mining_score": None}), "mining_score must be a number"),
        (hard({**HARD_META, "frame_uuid": "xyz"}), "not a UUID"),
        (hard({**HARD_META, "robot_id": "a/b"}), "robot id"),
        (hard({**HARD_META, "robot_id": "+"}), "robot id"),
        (hard({**HARD_META, "frame_id": 3}), "frame_id must be a string"),
        (hard({**HARD_META, "extra": {"a": [1]}}), r"extra\['a'\]"),
        (hard({**HARD_META, "extra": "x"}), "extra must be an object"),
        (meta_bytes_case(b'{"mining_score": NaN}'), "NaN is not JSON"),
        (meta_bytes_case(json.dumps(HARD_META).replace("0.5", "1e999").encode()), "finite"),
        (meta_bytes_case(b'{"a": 1, "a": 2}'), "duplicate key"),
        (meta_bytes_case(b"[1, 2]"), "must be a JSON object"),
        (meta_bytes_case(b"\xff\xfe{}"), "not UTF-8"),
        (meta_bytes_case(b"{"), "not valid JSON"),
        (meta_bytes_case(b""), "not valid JSON"),
        (meta_bytes_case(b"[" * 60_000), "nests too deeply|not valid JSON"),
        (meta_bytes_case(b'{"a": ' + b"9" * 5000 + b"}"), "not valid JSON"),
        (meta_bytes_case(json.dumps({**HARD_META, "frame_id": "\ud800"}).encode()), "Unicode"),
    ],
)
def test_bad_metadata(data, message):
    with pytest.raises(WireError, match=message):
        decode_hard_frame(data)


def test_bad_metadata_is_reported_before_pixels_are_decoded(no_imdecode):
    with pytest.raises(WireError, match="not a UUID"):
        decode_hard_frame(hard({**HARD_META, "frame_uuid": "xyz"}))


@pytest.mark.parametrize(
    "data, message",
    [
        (b'{"protocol_version": 2}', "protocol_version is 2"),
        (b'{"protocol_version": true}', "protocol_version is True"),
        (b"{}", "protocol_version is None"),
        (b'{"protocol_version": 1, "robot_id": "d"}', "lacks state"),
        (b'{"protocol_version":1,"robot_id":"d","state":"on","stamp_ns":1,"model_version":"m","counters":{}}', "state"),
        (b'{"protocol_version":1,"robot_id":"d","state":"online","stamp_ns":1,"model_version":"m","counters":[]}',
         "counters must be an object"),
        (b"offline", "not valid JSON"),
        (b"\x80", "not UTF-8"),
        (b"{" + b" " * 70_000 + b"}", "above the limit"),
        (None, "bytes"),
    ],
)
def test_bad_status(data, message):
    with pytest.raises(WireError, match=message):
        decode_status(data)


def test_truncation_at_every_offset():
    for data, decode in [
        (encode_hard_frame(make_frame(8, 8)), decode_hard_frame),
        (encode_hard_frame(make_frame(8, 8, depth=False), "png"), decode_hard_frame),
        (encode_hard_frame(make_frame(8, 8), depth_unit_mm=20), decode_hard_frame),
        (encode_refined(make_refined(8, 8)), decode_refined),
        (encode_status(RobotStatus("d", "online", 1, "m", {"n": 1})), decode_status),
    ]:
        decode(data)
        for end in range(len(data)):
            with pytest.raises(WireError):
                decode(data[:end])


# --- fuzzing ------------------------------------------------------------------

ROBOT_IDS = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True).filter(lambda s: s != "models")
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=10),
)
INVALID_DEPTH = np.array([np.nan, np.inf, -np.inf, -1.0, 0.0], np.float32)


@st.composite
def hard_frames(draw) -> HardFrame:
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    mm = draw(arrays(np.uint16, (h, w)))
    invalid = draw(arrays(np.uint8, (h, w), elements=st.integers(0, len(INVALID_DEPTH) - 1)))
    depth = np.where(mm == 0, INVALID_DEPTH[invalid], mm.astype(np.float32) / np.float32(1000))
    return HardFrame(
        robot_id=draw(ROBOT_IDS),
        frame_uuid=str(draw(st.uuids())),
        stamp_ns=draw(st.integers(0, 2**63 - 1)),
        frame_id=draw(st.text(max_size=20)),
        model_version=draw(st.text(max_size=20)),
        mining_policy=draw(st.text(max_size=20)),
        mining_score=draw(st.floats(allow_nan=False, allow_infinity=False)),
        rgb=draw(arrays(np.uint8, (h, w, 3))),
        depth_m=draw(st.sampled_from([None, depth.astype(np.float32)])),
        edge_labels=draw(arrays(np.uint8, (h, w))),
        extra=draw(st.dictionaries(st.text(max_size=8), SCALARS, max_size=4)),
    )


@FUZZ
@given(hard_frames())
def test_fuzz_valid_frames_round_trip(frame):
    out = decode_hard_frame(encode_hard_frame(frame, "png"))
    if frame.depth_m is not None:
        valid = np.isfinite(frame.depth_m) & (frame.depth_m > 0)
        assert np.array_equal(out.depth_m, np.where(valid, frame.depth_m, np.float32(0)))
        frame = HardFrame(**{**vars(frame), "depth_m": out.depth_m})
    assert_frames_equal(out, frame)
    jpeg_out = decode_hard_frame(encode_hard_frame(frame, jpeg_quality=75))
    assert jpeg_out.rgb.shape == frame.rgb.shape
    assert_frames_equal(jpeg_out, frame, rgb_atol=255)


@FUZZ
@given(st.integers(1, 1000), st.data())
def test_fuzz_depth_unit_round_trip(unit, data):
    h, w = data.draw(st.integers(1, 12)), data.draw(st.integers(1, 12))
    # on the unit's grid: exact
    values = data.draw(arrays(np.uint16, (h, w)))
    invalid = data.draw(arrays(np.uint8, (h, w), elements=st.integers(0, len(INVALID_DEPTH) - 1)))
    depth = np.where(values == 0, INVALID_DEPTH[invalid], metres(values, unit))
    encoded = encode_hard_frame(depth_frame(depth), "png", depth_unit_mm=unit)
    assert np.array_equal(depth_units_on_the_wire(encoded), values)
    assert np.array_equal(decode_hard_frame(encoded).depth_m, metres(values, unit))
    # anywhere: within half a unit of the depth clamped to 1..65535 units, never invalid
    top = 65535 * unit / 1000
    anywhere = data.draw(arrays(np.float32, (h, w), elements=st.floats(
        float(np.float32(1e-6)), float(np.float32(1.2 * top)), width=32)))
    out = decode_hard_frame(encode_hard_frame(depth_frame(anywhere), "png", depth_unit_mm=unit)).depth_m
    clamped = np.clip(anywhere.astype(np.float64), unit / 1000, top)
    assert (out > 0).all()
    assert (np.abs(out - clamped) <= unit / 2000 + 1e-6 * clamped).all()


def _seed_payloads() -> list[tuple[bytes, str]]:
    return [
        (encode_hard_frame(make_frame(6, 7)), "hard"),
        (encode_hard_frame(make_frame(5, 3, depth=False, extra={}), "png"), "hard"),
        (encode_hard_frame(make_frame(4, 5, extra={}), "png", depth_unit_mm=10), "hard"),
        (encode_refined(make_refined(4, 4)), "refined"),
        (encode_status(RobotStatus("dog-01", "online", 7, "m", {"frames": 3})), "status"),
    ]


SEEDS = _seed_payloads()


def decode_checked(data: bytes, which: str) -> None:
    """Decoding may only raise WireError or give an object the encoder round-trips."""
    try:
        if which == "hard":
            frame = decode_hard_frame(data)  # so the metadata is valid JSON with a valid unit, if any
            assert_valid_hard(frame, metadata(data).get("depth_unit_mm", 1))
        elif which == "refined":
            result = decode_refined(data)
            again = decode_refined(encode_refined(result))
            assert np.array_equal(again.labels, result.labels) and again.frame_uuid == result.frame_uuid
        else:
            status = decode_status(data)
            assert decode_status(encode_status(status)) == status
    except WireError:
        pass


@FUZZ
@given(st.binary(max_size=300), st.sampled_from(["hard", "refined", "status"]),
       st.sampled_from([b"", b"SEGW", b"SEGW\x01\x01", b"SEGW\x01\x02"]))
def test_fuzz_arbitrary_bytes(data, which, prefix):
    decode_checked(prefix + data, which)


MUTATION = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 2**20), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.integers(0, 2**20)),
    st.tuples(st.just("insert"), st.integers(0, 2**20), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("set"), st.integers(0, 2**20), st.integers(0, 255)),
)


def mutate(data: bytes, ops) -> bytes:
    buf = bytearray(data)
    for op in ops:
        if not buf:
            break
        pos = op[1] % len(buf)
        if op[0] == "flip":
            buf[pos] ^= 1 << op[2]
        elif op[0] == "truncate":
            del buf[pos:]
        elif op[0] == "insert":
            buf[pos:pos] = op[2]
        else:
            buf[pos] = op[2]
    return bytes(buf)


@FUZZ
@given(st.sampled_from(SEEDS), st.lists(MUTATION, min_size=1, max_size=4))
def test_fuzz_mutated_payloads(seed, ops):
    data, which = seed
    decode_checked(mutate(data, ops), which)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(SEEDS[:3]), st.integers(0, 10_000), st.integers(0, 7))
def test_fuzz_header_bit_flips(seed, pos, bit):
    """Bit flips aimed at the framing and metadata rather than the image bytes."""
    data, which = seed
    decode_checked(mutate(data, [("flip", pos % 200, bit)]), which)
