"""Payloads of the segmentation protocol: what a robot and a cloud bridge send.

Hard frames and refined results are binary; robot status is JSON. This module
docstring is the specification, written so a C++ robot can implement it.

Binary message (protocol version 1), all integers little-endian::

    offset  size  field
    0       4     magic b"SEGW"
    4       1     u8  protocol version, 1
    5       1     u8  message kind: 1 hard frame, 2 refined result
    6       4     u32 metadata length M
    10      M     metadata: one UTF-8 JSON object (fields below)
    10+M    1     u8  section count N
    then N sections, each:
            1     u8  section id: 1 rgb, 2 depth, 3 edge labels, 4 refined labels
            1     u8  codec id: 1 JPEG, 2 PNG
            4     u32 data length L
            L     the encoded image
    the message ends exactly after the last section.

Sections may come in any order, each at most once (N is at most 8 by default).

    ==========  ==================  ======  ===================================================
    section     in                  codec   image
    ==========  ==================  ======  ===================================================
    1 rgb       hard, required      1 or 2  8-bit RGB. JPEG (lossy): 3 components, 8-bit
                                            precision, as libjpeg writes colour. PNG (exact):
                                            colour type 2, bit depth 8.
    2 depth     hard, optional      2       PNG colour type 0, bit depth 16: depth in whole
                                            units of U = ``depth_unit_mm`` millimetres (a
                                            metadata field, 1 when absent, so plain
                                            millimetres), 0 = no return. Senders write
                                            round(depth_mm / U), clamp valid depth to
                                            1..65535 units (a valid depth never becomes 0:
                                            one that rounds to 0 units reads as U mm; the
                                            largest is 65535 * U mm, 65.535 m for U = 1,
                                            655.35 m for U = 10, and anything beyond reads as
                                            it) and write 0 for invalid depth (NaN,
                                            inf, <= 0). Decoders compute metres = value * U /
                                            1000 (the product reaches 65,535,000: use 32-bit
                                            integers or doubles) and return float32 metres
                                            with 0.0 for invalid (the robot's 16UC1
                                            convention), not NaN.
    3 edge      hard, required      2       PNG colour type 0, bit depth 8: class id per pixel,
                                            255 = ignore
    4 refined   refined, required   2       as 3
    ==========  ==================  ======  ===================================================

All images of a message have the same width and height, 1..4096 each by
default (``WireLimits``). A PNG's first chunk must be IHDR, as the PNG
standard requires, and every chunk up to IEND must fit in the section; a JPEG's frame header (SOF0-SOF15 except C4, C8, CC) must
come before its first scan.

Metadata values are strings, numbers, booleans or null, never pixels; the one
nested value is ``extra``, a flat object of the same. Integers lie within
int64, floats are finite (no NaN/Infinity literals), keys are not repeated,
strings are any Unicode. Receivers ignore keys they do not know, so a key can
be added within version 1; anything else (a new section, a changed meaning)
needs a new protocol version. ``depth_unit_mm`` is such an added key, but it
changes how the depth section reads: a receiver that predates it reads every
depth as millimetres, U times too near. Senders omit it (plain millimetres)
unless every receiver is known to read it.

Hard frame (kind 1) metadata:
    robot_id       str    1-64 of [A-Za-z0-9_-], not "models" (see topics.py)
    frame_uuid     str    canonical lowercase UUID, "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
    stamp_ns       int    camera header stamp, ns since the epoch, 0..2**63-1
    frame_id       str    camera TF frame
    model_version  str    edge model that segmented the frame
    mining_policy  str    why the frame was picked as hard
    mining_score   float  the policy's score
    extra          object optional, small: flat object of string keys to scalars
    depth_unit_mm  int    optional, 1..1000, absent = 1: the depth section's unit
                          in millimetres (see section 2). Senders here write it
                          only when the frame has depth and U is not 1, so a
                          millimetre frame is byte for byte what it was before
                          the key existed. Receivers check it whenever it is
                          present (an integer, not 10.0, true or "10") and
                          ignore it when there is no depth section.

Refined result (kind 2) metadata: robot_id, frame_uuid, stamp_ns, frame_id
(copied from the hard frame), edge_model_version (its model_version), refiner
(e.g. "sam_vit_b+logit_vote"), bridge_id (which bridge refined it), all str
but stamp_ns.

Robot status is one UTF-8 JSON object: protocol_version (1), robot_id, state
("online" or "offline"), stamp_ns, model_version, counters (object of
string keys to non-negative integers).

Decoders check sizes before decoding anything: total length, metadata
length, each section's length against the bytes left, and each image's
width and height read from its PNG IHDR or JPEG frame header, before an image
is decompressed. Every malformed input raises ``WireError``.
"""

from __future__ import annotations

import json
import math
import numbers
import struct
import uuid
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Callable, NamedTuple

import cv2
import numpy as np

from . import images
from .errors import WireError
from .images import Codec
from .topics import PROTOCOL_VERSION, validate_robot_id

MAGIC = b"SEGW"
_HEAD = struct.Struct("<BBI")  # version, kind, metadata length (after the magic)
_SECTION_HEAD = struct.Struct("<BBI")  # section id, codec id, data length
_INT64 = (-(2**63), 2**63 - 1)
STATES = ("online", "offline")


class Kind(IntEnum):
    HARD_FRAME = 1
    REFINED_RESULT = 2


class Section(IntEnum):
    RGB = 1
    DEPTH = 2
    EDGE_LABELS = 3
    REFINED_LABELS = 4


class _SectionSpec(NamedTuple):
    codecs: frozenset[Codec]
    channels: int
    bits: int


_SECTION_SPECS = {
    Section.RGB: _SectionSpec(frozenset({Codec.JPEG, Codec.PNG}), 3, 8),
    Section.DEPTH: _SectionSpec(frozenset({Codec.PNG}), 1, 16),
    Section.EDGE_LABELS: _SectionSpec(frozenset({Codec.PNG}), 1, 8),
    Section.REFINED_LABELS: _SectionSpec(frozenset({Codec.PNG}), 1, 8),
}
# kind -> (required sections, optional sections)
_KIND_SECTIONS = {
    Kind.HARD_FRAME: ({Section.RGB, Section.EDGE_LABELS}, {Section.DEPTH}),
    Kind.REFINED_RESULT: ({Section.REFINED_LABELS}, set()),
}


@dataclass(frozen=True)
class WireLimits:
    """What a decoder accepts; encoders refuse to produce more, so a sender
    learns of an oversized message instead of the receiver silently dropping it."""

    max_payload_bytes: int = 8 * 1024 * 1024  # whole binary message
    max_metadata_bytes: int = 64 * 1024  # its JSON metadata; also a whole status message
    max_width: int = 4096  # of every image, read from its header before decoding
    max_height: int = 4096
    max_sections: int = 8


# --- field checks, shared by the dataclasses and the decoders (which run them
# before decoding any pixels). Each returns the value as it is stored.


def _check_str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise WireError(f"{name} must be a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise WireError(f"{name} is not valid Unicode (lone surrogate)") from None
    return value


# Numbers are checked as numbers.Integral / numbers.Real so NumPy scalars (a
# score computed with float32 maths) are accepted, then stored as Python
# int / float so they serialise to plain JSON.


def _check_int(name: str, value: Any, lo: int = _INT64[0], hi: int = _INT64[1]) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise WireError(f"{name} must be an integer, got {type(value).__name__}")
    value = int(value)
    if not lo <= value <= hi:
        raise WireError(f"{name} = {value} is outside {lo}..{hi}")
    return value


def _check_float(name: str, value: Any) -> float:
    # JSON writers may print an integral float without a fraction, so ints count.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise WireError(f"{name} must be a number, got {type(value).__name__}")
    try:
        value = float(value)
    except OverflowError:
        raise WireError(f"{name} is too large for a float") from None
    if not math.isfinite(value):
        raise WireError(f"{name} must be finite, got {value}")
    return value


def _check_robot_id(name: str, value: Any) -> str:
    return validate_robot_id(value)


def _check_uuid(name: str, value: Any) -> str:
    _check_str(name, value)
    try:
        canonical = str(uuid.UUID(value))
    except ValueError:
        raise WireError(f"{name} {value!r} is not a UUID") from None
    if value != canonical:
        raise WireError(f"{name} {value!r} is not in canonical form {canonical!r}")
    return value


def _check_stamp(name: str, value: Any) -> int:
    return _check_int(name, value, 0, _INT64[1])


def _check_extra(name: str, value: Any) -> dict[str, str | int | float | bool | None]:
    if not isinstance(value, dict):
        raise WireError(f"{name} must be an object, got {type(value).__name__}")
    checked = {}
    for key, v in value.items():
        _check_str(f"{name} key", key)
        item = f"{name}[{key!r}]"
        if isinstance(v, str):
            checked[key] = _check_str(item, v)
        elif isinstance(v, (bool, np.bool_)):
            checked[key] = bool(v)
        elif v is None:
            checked[key] = None
        elif isinstance(v, numbers.Integral):
            checked[key] = _check_int(item, v)
        elif isinstance(v, numbers.Real):
            checked[key] = _check_float(item, v)
        else:
            raise WireError(f"{item} must be a string, number, bool or null, got {type(v).__name__}")
    return checked


def _check_counters(name: str, value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        raise WireError(f"{name} must be an object, got {type(value).__name__}")
    return {_check_str(f"{name} key", key): _check_int(f"{name}[{key!r}]", v, 0) for key, v in value.items()}


def _check_state(name: str, value: Any) -> str:
    if not isinstance(value, str) or value not in STATES:
        raise WireError(f"{name} must be one of {STATES}, got {value!r}")
    return value


_Check = Callable[[str, Any], Any]
_HARD_FIELDS: dict[str, _Check] = {
    "robot_id": _check_robot_id,
    "frame_uuid": _check_uuid,
    "stamp_ns": _check_stamp,
    "frame_id": _check_str,
    "model_version": _check_str,
    "mining_policy": _check_str,
    "mining_score": _check_float,
}
_REFINED_FIELDS: dict[str, _Check] = {
    "robot_id": _check_robot_id,
    "frame_uuid": _check_uuid,
    "stamp_ns": _check_stamp,
    "frame_id": _check_str,
    "edge_model_version": _check_str,
    "refiner": _check_str,
    "bridge_id": _check_str,
}
_STATUS_FIELDS: dict[str, _Check] = {
    "robot_id": _check_robot_id,
    "state": _check_state,
    "stamp_ns": _check_stamp,
    "model_version": _check_str,
    "counters": _check_counters,
}


def _check_fields(obj: object, checks: dict[str, _Check]) -> None:
    for name, check in checks.items():
        object.__setattr__(obj, name, check(name, getattr(obj, name)))


def _check_image(
    name: str, a: Any, dtype: type, channels: int | None, hw: tuple[int, int] | None = None
) -> tuple[int, int]:
    want = "(H, W, 3)" if channels else "(H, W)"
    if not isinstance(a, np.ndarray):
        raise WireError(f"{name} must be a numpy array {want} {np.dtype(dtype)}, got {type(a).__name__}")
    if a.dtype != dtype:
        raise WireError(f"{name} must be {np.dtype(dtype)}, got {a.dtype}")
    if a.ndim != (3 if channels else 2) or (channels and a.shape[2] != channels) or 0 in a.shape:
        raise WireError(f"{name} must have shape {want} with H, W >= 1, got {a.shape}")
    if hw is not None and a.shape[:2] != hw:
        raise WireError(f"{name} is {a.shape[0]}x{a.shape[1]} but rgb is {hw[0]}x{hw[1]}")
    return a.shape[:2]


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value
class HardFrame:
    """A camera frame the edge model was unsure about, robot -> cloud."""

    robot_id: str
    frame_uuid: str
    stamp_ns: int
    frame_id: str
    model_version: str
    mining_policy: str
    mining_score: float
    rgb: np.ndarray  # (H, W, 3) uint8 RGB
    depth_m: np.ndarray | None  # (H, W) float32 metres; NaN, inf or <= 0 = invalid
    edge_labels: np.ndarray  # (H, W) uint8 class ids, 255 = ignore
    extra: dict[str, str | int | float | bool | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_fields(self, _HARD_FIELDS)
        object.__setattr__(self, "extra", _check_extra("extra", self.extra))
        hw = _check_image("rgb", self.rgb, np.uint8, 3)
        if self.depth_m is not None:
            _check_image("depth_m", self.depth_m, np.float32, None, hw)
        _check_image("edge_labels", self.edge_labels, np.uint8, None, hw)


@dataclass(frozen=True, eq=False)
class RefinedResult:
    """The cloud's refined label mask for one hard frame, cloud -> robot."""

    robot_id: str
    frame_uuid: str
    stamp_ns: int
    frame_id: str
    edge_model_version: str
    refiner: str
    labels: np.ndarray  # (H, W) uint8 class ids, 255 = ignore
    bridge_id: str

    def __post_init__(self) -> None:
        _check_fields(self, _REFINED_FIELDS)
        _check_image("labels", self.labels, np.uint8, None)


@dataclass(frozen=True)
class RobotStatus:
    """A robot's retained status; also its last will with state "offline"."""

    robot_id: str
    state: str  # one of STATES
    stamp_ns: int
    model_version: str
    counters: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_fields(self, _STATUS_FIELDS)


# --- JSON


def _dump_json(obj: dict) -> bytes:
    try:
        return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as e:  # the field checks should make this unreachable
        raise WireError(f"metadata cannot be written as JSON: {e}") from None


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise WireError("duplicate key")
    return obj


def _reject_constant(name: str) -> None:
    raise WireError(f"{name} is not JSON")


def _load_json(raw: bytes, what: str) -> dict:
    try:
        obj = json.loads(
            raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys, parse_constant=_reject_constant
        )
    except UnicodeDecodeError as e:
        raise WireError(f"{what} is not UTF-8: {e.reason} at byte {e.start}") from None
    except RecursionError:
        raise WireError(f"{what} nests too deeply") from None
    except ValueError as e:  # JSONDecodeError, our hooks, int digit limit
        raise WireError(f"{what} is not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise WireError(f"{what} must be a JSON object, got {type(obj).__name__}")
    return obj


def _fields_from(meta: dict, checks: dict[str, _Check], kind: str) -> dict[str, Any]:
    missing = [name for name in checks if name not in meta]
    if missing:
        raise WireError(f"{kind} metadata lacks {', '.join(missing)}")
    return {name: check(name, meta[name]) for name, check in checks.items()}


# --- framing


def _check_dims(hw: tuple[int, int], limits: WireLimits, what: str) -> None:
    h, w = hw
    if w > limits.max_width or h > limits.max_height:
        raise WireError(
            f"{what} is {w}x{h} (WxH), above the limit {limits.max_width}x{limits.max_height}"
        )


def _pack(kind: Kind, meta: dict, sections: list[tuple[Section, Codec, bytes]], limits: WireLimits) -> bytes:
    meta_bytes = _dump_json(meta)
    if len(meta_bytes) > limits.max_metadata_bytes:
        raise WireError(f"metadata is {len(meta_bytes)} bytes, above the limit {limits.max_metadata_bytes}")
    parts = [MAGIC, _HEAD.pack(PROTOCOL_VERSION, kind, len(meta_bytes)), meta_bytes, bytes([len(sections)])]
    for section, codec, blob in sections:
        parts += [_SECTION_HEAD.pack(section, codec, len(blob)), blob]
    data = b"".join(parts)
    if len(data) > limits.max_payload_bytes:
        raise WireError(f"{kind.name} payload is {len(data)} bytes, above the limit {limits.max_payload_bytes}")
    return data


def _unpack(data: Any, kind: Kind, limits: WireLimits) -> tuple[dict, dict[Section, tuple[Codec, bytes, images.ImageHeader]]]:
    """Split a message into metadata and sections whose image headers passed every check."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireError(f"payload must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > limits.max_payload_bytes:
        raise WireError(f"payload is {len(data)} bytes, above the limit {limits.max_payload_bytes}")
    if len(data) < len(MAGIC) + _HEAD.size:
        raise WireError(f"payload is {len(data)} bytes, shorter than the {len(MAGIC) + _HEAD.size}-byte header")
    if not data.startswith(MAGIC):
        raise WireError(f"payload does not start with {MAGIC!r}")
    version, got_kind, meta_len = _HEAD.unpack_from(data, len(MAGIC))
    if version != PROTOCOL_VERSION:
        raise WireError(f"protocol version {version}, this decoder speaks {PROTOCOL_VERSION}")
    if got_kind != kind:
        raise WireError(f"message kind {got_kind}, expected {int(kind)} ({kind.name})")
    if meta_len > limits.max_metadata_bytes:
        raise WireError(f"metadata length {meta_len} is above the limit {limits.max_metadata_bytes}")
    pos = len(MAGIC) + _HEAD.size
    if meta_len + 1 > len(data) - pos:  # + 1: the section count follows
        raise WireError(f"metadata length {meta_len} runs past the end of the {len(data)}-byte payload")
    meta = _load_json(data[pos : pos + meta_len], "metadata")
    pos += meta_len
    count = data[pos]
    pos += 1
    if count > limits.max_sections:
        raise WireError(f"{count} sections, above the limit {limits.max_sections}")

    required, optional = _KIND_SECTIONS[kind]
    raw: dict[Section, tuple[Codec, bytes]] = {}
    for i in range(count):
        if len(data) - pos < _SECTION_HEAD.size:
            raise WireError(f"section {i} header is truncated")
        section_id, codec_id, length = _SECTION_HEAD.unpack_from(data, pos)
        pos += _SECTION_HEAD.size
        if length > len(data) - pos:
            raise WireError(f"section {i} declares {length} bytes but only {len(data) - pos} remain")
        if section_id not in required | optional:
            raise WireError(f"section id {section_id} is not allowed in a {kind.name} message")
        section = Section(section_id)
        if section in raw:
            raise WireError(f"section {section.name} appears twice")
        spec = _SECTION_SPECS[section]
        if codec_id not in spec.codecs:
            raise WireError(f"codec id {codec_id} is not allowed for section {section.name}")
        raw[section] = (Codec(codec_id), data[pos : pos + length])
        pos += length
    if pos != len(data):
        raise WireError(f"{len(data) - pos} bytes after the last section")
    missing = sorted(s.name for s in required - raw.keys())
    if missing:
        raise WireError(f"{kind.name} message lacks section(s) {', '.join(missing)}")

    checked = {}
    for section, (codec, blob) in raw.items():
        header = images.read_header(codec, blob)
        spec = _SECTION_SPECS[section]
        if (header.channels, header.bits) != (spec.channels, spec.bits):
            raise WireError(
                f"section {section.name} is {header.channels} channel(s) of {header.bits} bits, "
                f"expected {spec.channels} of {spec.bits}"
            )
        if header.width == 0 or header.height == 0:
            raise WireError(f"section {section.name} is an empty image ({header.width}x{header.height})")
        _check_dims((header.height, header.width), limits, f"section {section.name}")
        checked[section] = (codec, blob, header)
    sizes = {(h.width, h.height) for _, _, h in checked.values()}
    if len(sizes) > 1:
        raise WireError(f"images of one message differ in size (WxH): {sorted(sizes)}")
    return meta, checked


# --- depth: float32 metres <-> uint16 units of depth_unit_mm millimetres

DEPTH_UNIT_KEY = "depth_unit_mm"
DEPTH_UNIT_RANGE = (1, 1000)


def _check_depth_unit(name: str, value: Any) -> int:
    return _check_int(name, value, *DEPTH_UNIT_RANGE)


def _depth_to_units(depth_m: np.ndarray, unit_mm: int) -> np.ndarray:
    valid = np.isfinite(depth_m) & (depth_m > 0)
    # float64: float32 * 1000 can land on the wrong side of a half unit.
    # (x * 1000) / 1 is x * 1000, so unit 1 rounds exactly as it always did.
    units = np.rint(np.where(valid, depth_m, 0).astype(np.float64) * 1000.0 / unit_mm)
    return np.where(valid, np.clip(units, 1, 65535), 0).astype(np.uint16)


def _units_to_depth(units: np.ndarray, unit_mm: int) -> np.ndarray:
    # value * unit is an exact integer in float64; one division rounded to
    # float64 and then to float32 is the correctly rounded float32 (53 >= 2 * 24 + 2),
    # so unit 1 gives exactly the float32 division it always did.
    return (units.astype(np.float64) * unit_mm / 1000.0).astype(np.float32)


# --- public codec

_RGB_FORMATS = {"jpeg": Codec.JPEG, "png": Codec.PNG}


def encode_hard_frame(
    frame: HardFrame,
    rgb_format: str = "jpeg",
    jpeg_quality: int = 90,
    limits: WireLimits = WireLimits(),
    depth_unit_mm: int = 1,
) -> bytes:
    """``rgb_format`` "jpeg" (lossy, ``jpeg_quality`` 1-100) or "png" (exact).

    ``depth_unit_mm`` (integer 1..1000) is the step depth is rounded to; depth
    beyond 65535 * ``depth_unit_mm`` mm is clamped to it. Above 1 it is written
    as metadata ``depth_unit_mm``, which only receivers that know the key read
    correctly (see the module docstring); a frame without depth ignores it
    (after checking it) and does not carry the key.
    """
    if rgb_format not in _RGB_FORMATS:
        raise WireError(f"rgb_format must be one of {sorted(_RGB_FORMATS)}, got {rgb_format!r}")
    if isinstance(jpeg_quality, bool) or not isinstance(jpeg_quality, int) or not 1 <= jpeg_quality <= 100:
        raise WireError(f"jpeg_quality must be an integer 1..100, got {jpeg_quality!r}")
    depth_unit_mm = _check_depth_unit("depth_unit_mm", depth_unit_mm)
    _check_dims(frame.rgb.shape[:2], limits, "rgb")
    codec = _RGB_FORMATS[rgb_format]
    bgr = cv2.cvtColor(np.ascontiguousarray(frame.rgb), cv2.COLOR_RGB2BGR)
    sections = [(Section.RGB, codec, images.encode(codec, bgr, jpeg_quality))]
    if frame.depth_m is not None:
        units = _depth_to_units(frame.depth_m, depth_unit_mm)
        sections.append((Section.DEPTH, Codec.PNG, images.encode(Codec.PNG, units)))
    labels = np.ascontiguousarray(frame.edge_labels)
    sections.append((Section.EDGE_LABELS, Codec.PNG, images.encode(Codec.PNG, labels)))
    meta = {name: getattr(frame, name) for name in _HARD_FIELDS}
    if frame.extra:
        meta["extra"] = frame.extra
    if frame.depth_m is not None and depth_unit_mm != 1:
        meta[DEPTH_UNIT_KEY] = depth_unit_mm
    return _pack(Kind.HARD_FRAME, meta, sections, limits)


def decode_hard_frame(data: bytes, limits: WireLimits = WireLimits()) -> HardFrame:
    meta, sections = _unpack(data, Kind.HARD_FRAME, limits)
    fields = _fields_from(meta, _HARD_FIELDS, "hard frame")
    fields["extra"] = _check_extra("extra", meta.get("extra", {}))
    unit_mm = _check_depth_unit(DEPTH_UNIT_KEY, meta[DEPTH_UNIT_KEY]) if DEPTH_UNIT_KEY in meta else 1
    rgb = cv2.cvtColor(images.decode(*sections[Section.RGB]), cv2.COLOR_BGR2RGB)
    depth = sections.get(Section.DEPTH)
    return HardFrame(
        **fields,
        rgb=rgb,
        depth_m=None if depth is None else _units_to_depth(images.decode(*depth), unit_mm),
        edge_labels=images.decode(*sections[Section.EDGE_LABELS]),
    )


def encode_refined(result: RefinedResult, limits: WireLimits = WireLimits()) -> bytes:
    _check_dims(result.labels.shape, limits, "labels")
    labels = images.encode(Codec.PNG, np.ascontiguousarray(result.labels))
    meta = {name: getattr(result, name) for name in _REFINED_FIELDS}
    return _pack(Kind.REFINED_RESULT, meta, [(Section.REFINED_LABELS, Codec.PNG, labels)], limits)


def decode_refined(data: bytes, limits: WireLimits = WireLimits()) -> RefinedResult:
    meta, sections = _unpack(data, Kind.REFINED_RESULT, limits)
    fields = _fields_from(meta, _REFINED_FIELDS, "refined result")
    return RefinedResult(**fields, labels=images.decode(*sections[Section.REFINED_LABELS]))


def encode_status(status: RobotStatus, limits: WireLimits = WireLimits()) -> bytes:
    meta = {"protocol_version": PROTOCOL_VERSION}
    meta.update((name, getattr(status, name)) for name in _STATUS_FIELDS)
    data = _dump_json(meta)
    if len(data) > limits.max_metadata_bytes:
        raise WireError(f"status is {len(data)} bytes, above the limit {limits.max_metadata_bytes}")
    return data


def decode_status(data: bytes, limits: WireLimits = WireLimits()) -> RobotStatus:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireError(f"payload must be bytes, got {type(data).__name__}")
    if len(data) > limits.max_metadata_bytes:
        raise WireError(f"status is {len(data)} bytes, above the limit {limits.max_metadata_bytes}")
    meta = _load_json(bytes(data), "status")
    version = meta.get("protocol_version")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise WireError(f"status protocol_version is {version!r}, this decoder speaks {PROTOCOL_VERSION}")
    return RobotStatus(**_fields_from(meta, _STATUS_FIELDS, "status"))
