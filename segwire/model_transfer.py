"""Messages that move a model file from the cloud to one robot, chunk by chunk.

The robot learns of a model from its signed manifest (segwire.model_manifest,
retained on ``seg/v1/models/<fleet>/manifest``), then asks for the chunks it lacks
and checks each against the manifest's SHA-256 as it arrives. Nothing here needs
to be trusted: a chunk is only as good as the signed hash it matches.

Chunk request, robot -> cloud on ``seg/v1/<robot_id>/model/request``: one UTF-8 JSON
object ``{"version": V, "chunks": [i, ...]}``, V in 1..2**32-1, 1 to
``ModelLimits.max_chunks_per_request`` distinct chunk indices in 0..2**32-1, at most
``max_request_bytes``. Receivers ignore keys they do not know.

Chunk, cloud -> robot on ``seg/v1/<robot_id>/model/chunk``, integers little-endian::

    offset  size  field
    0       4     magic b"SEGC"
    4       1     u8  protocol version, 1
    5       4     u32 model version
    9       4     u32 chunk index
    13      4     u32 data length L, 1..ModelLimits.max_chunk_size
    17      L     the chunk's bytes; the message ends here

Transfer status (how the robot's download of a model version goes; not the ROS
``seg_msgs/ModelStatus``, which says which model serves), robot -> all on
``seg/v1/<robot_id>/model/status``, retained: one UTF-8 JSON object:
protocol_version (1), robot_id, state (one of TRANSFER_STATES), version (the model
version being handled, or null), current_version (the one in use, 0 = none pushed
yet), received and total (chunks), reason (short code of the last rejection, "" if
none), last_error (for people), stamp_ns, counters (string keys to non-negative
integers).
"""
from __future__ import annotations

import json
import struct
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

from .errors import WireError
from .payload import _check_counters, _check_int, _check_str, _dump_json, _load_json
from .topics import PROTOCOL_VERSION, validate_robot_id

CHUNK_MAGIC = b"SEGC"
_CHUNK_HEAD = struct.Struct("<BIII")  # protocol version, model version, index, length (after the magic)
CHUNK_HEADER_BYTES = len(CHUNK_MAGIC) + _CHUNK_HEAD.size
_U32_MAX = 2**32 - 1
TRANSFER_STATES = ("idle", "downloading", "verifying", "ready", "rejected")


@dataclass(frozen=True)
class ModelLimits:
    """What a receiver accepts of model push messages (manifest, chunks, requests,
    status); senders check their own messages against the same limits."""

    max_manifest_bytes: int = 256 * 1024       # checked before the JSON is parsed
    max_model_bytes: int = 512 * 1024 * 1024
    min_chunk_size: int = 4 * 1024             # a floor on per-message overhead
    max_chunk_size: int = 4 * 1024 * 1024      # what one MQTT message carries
    max_request_bytes: int = 4 * 1024
    max_chunks_per_request: int = 64
    max_status_bytes: int = 16 * 1024


class TransferError(WireError):
    """A malformed chunk, request or model status message."""


@contextmanager
def _transfer_errors() -> Iterator[None]:
    # The shared field checks raise plain WireError; callers of this module catch TransferError.
    try:
        yield
    except TransferError:
        raise
    except WireError as e:
        raise TransferError(str(e)) from None


def _check_bytes(data: Any, limit: int, what: str) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TransferError(f"{what} must be bytes, got {type(data).__name__}")
    if len(data) > limit:
        raise TransferError(f"{what} is {len(data)} bytes, above the limit {limit}")
    return bytes(data)


# --- chunks


@dataclass(frozen=True)
class ModelChunk:
    version: int
    index: int
    data: bytes


def encode_chunk(chunk: ModelChunk, limits: ModelLimits = ModelLimits()) -> bytes:
    with _transfer_errors():
        _check_int("version", chunk.version, 1, _U32_MAX)
        _check_int("index", chunk.index, 0, _U32_MAX)
    if not 1 <= len(chunk.data) <= limits.max_chunk_size:
        raise TransferError(f"chunk is {len(chunk.data)} bytes, outside 1..{limits.max_chunk_size}")
    return CHUNK_MAGIC + _CHUNK_HEAD.pack(PROTOCOL_VERSION, chunk.version, chunk.index, len(chunk.data)) \
        + bytes(chunk.data)


def decode_chunk(data: bytes, limits: ModelLimits = ModelLimits()) -> ModelChunk:
    data = _check_bytes(data, CHUNK_HEADER_BYTES + limits.max_chunk_size, "chunk message")
    if len(data) < CHUNK_HEADER_BYTES:
        raise TransferError(f"chunk message is {len(data)} bytes, shorter than the {CHUNK_HEADER_BYTES}-byte header")
    if not data.startswith(CHUNK_MAGIC):
        raise TransferError(f"chunk message does not start with {CHUNK_MAGIC!r}")
    protocol, version, index, length = _CHUNK_HEAD.unpack_from(data, len(CHUNK_MAGIC))
    if protocol != PROTOCOL_VERSION:
        raise TransferError(f"chunk protocol version {protocol}, this decoder speaks {PROTOCOL_VERSION}")
    if version == 0:
        raise TransferError("chunk model version is 0 (versions start at 1)")
    if not 1 <= length <= limits.max_chunk_size:
        raise TransferError(f"chunk length {length} is outside 1..{limits.max_chunk_size}")
    if length != len(data) - CHUNK_HEADER_BYTES:
        raise TransferError(f"chunk declares {length} bytes but carries {len(data) - CHUNK_HEADER_BYTES}")
    return ModelChunk(version, index, data[CHUNK_HEADER_BYTES:])


# --- requests


@dataclass(frozen=True)
class ModelRequest:
    version: int
    chunks: list[int]


def _check_request(request: ModelRequest, limits: ModelLimits) -> None:
    with _transfer_errors():
        _check_int("version", request.version, 1, _U32_MAX)
        if not isinstance(request.chunks, list):
            raise TransferError(f"chunks must be a list, got {type(request.chunks).__name__}")
        for i, index in enumerate(request.chunks):
            _check_int(f"chunks[{i}]", index, 0, _U32_MAX)
    if not 1 <= len(request.chunks) <= limits.max_chunks_per_request:
        raise TransferError(f"request names {len(request.chunks)} chunks, outside "
                            f"1..{limits.max_chunks_per_request}")
    if len(set(request.chunks)) != len(request.chunks):
        raise TransferError("request names a chunk twice")


def encode_request(request: ModelRequest, limits: ModelLimits = ModelLimits()) -> bytes:
    _check_request(request, limits)
    data = json.dumps({"version": request.version, "chunks": request.chunks}, separators=(",", ":")).encode()
    if len(data) > limits.max_request_bytes:
        raise TransferError(f"request is {len(data)} bytes, above the limit {limits.max_request_bytes}")
    return data


def decode_request(data: bytes, limits: ModelLimits = ModelLimits()) -> ModelRequest:
    data = _check_bytes(data, limits.max_request_bytes, "request")
    with _transfer_errors():
        obj = _load_json(data, "request")
    missing = [name for name in ("version", "chunks") if name not in obj]
    if missing:
        raise TransferError(f"request lacks {', '.join(missing)}")
    request = ModelRequest(obj["version"], obj["chunks"])
    _check_request(request, limits)
    return request


# --- transfer status


@dataclass(frozen=True)
class TransferStatus:
    """A robot's download of a model version, as it reports it over MQTT."""
    robot_id: str
    state: str
    version: int | None
    current_version: int
    received: int = 0
    total: int = 0
    reason: str = ""
    last_error: str = ""
    stamp_ns: int = 0
    counters: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        with _transfer_errors():
            validate_robot_id(self.robot_id)
            if self.state not in TRANSFER_STATES:
                raise TransferError(f"state must be one of {TRANSFER_STATES}, got {self.state!r}")
            if self.version is not None:
                _check_int("version", self.version, 1, _U32_MAX)
            _check_int("current_version", self.current_version, 0, _U32_MAX)
            for name in ("received", "total", "stamp_ns"):
                _check_int(name, getattr(self, name), 0)
            _check_str("reason", self.reason)
            _check_str("last_error", self.last_error)
            object.__setattr__(self, "counters", _check_counters("counters", self.counters))


def encode_transfer_status(status: TransferStatus, limits: ModelLimits = ModelLimits()) -> bytes:
    with _transfer_errors():
        data = _dump_json({"protocol_version": PROTOCOL_VERSION, **asdict(status)})
    if len(data) > limits.max_status_bytes:
        raise TransferError(f"model status is {len(data)} bytes, above the limit {limits.max_status_bytes}")
    return data


def decode_transfer_status(data: bytes, limits: ModelLimits = ModelLimits()) -> TransferStatus:
    data = _check_bytes(data, limits.max_status_bytes, "model status")
    with _transfer_errors():
        obj = _load_json(data, "model status")
    version = obj.pop("protocol_version", None)
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise TransferError(f"model status protocol_version is {version!r}, this decoder speaks {PROTOCOL_VERSION}")
    names = TransferStatus.__dataclass_fields__
    missing = [name for name in names if name not in obj]
    if missing:
        raise TransferError(f"model status lacks {', '.join(missing)}")
    return TransferStatus(**{name: obj[name] for name in names})
