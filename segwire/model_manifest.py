"""Signed manifests of model files pushed from the cloud to the robots (no MQTT here).

A manifest names one model file by version, size and SHA-256, cut into chunks of
``chunk_size`` bytes (the last one shorter) with one SHA-256 per chunk, so a robot
checks every chunk as it arrives and the whole file once complete. The cloud signs
it with Ed25519; a robot accepts it only when the signature verifies under one of
the keys it trusts, so nobody who can publish on the broker can push a model.

Wire form: one UTF-8 JSON object with exactly these keys::

    version       int    1..2**32-1, grows with every published model
    model_sha256  str    64 lowercase hex digits, of the whole file
    size          int    bytes, 1..ModelLimits.max_model_bytes
    chunk_size    int    bytes per chunk, ModelLimits.min/max_chunk_size
    chunk_sha256  [str]  ceil(size / chunk_size) hex digests, chunk 0 first
    format        str    "onnx"
    created_at    str    ISO 8601 time, with its UTC offset
    spec          obj    {num_classes: int, input_height: int, input_width: int,
                         use_depth: bool}, what the model expects
    base_version  int?   the version it was trained from, or null
    notes         str    free text for people
    key_id        str    which signing key, 1-64 of [A-Za-z0-9_-]
    signature     str    base64 of the Ed25519 signature over the canonical bytes

The canonical bytes are the same object without ``signature`` written as JSON with
sorted keys, no whitespace, non-ASCII characters as themselves, UTF-8. They include
``key_id``, so a signature cannot be presented as another key's. Unknown keys are
refused rather than ignored: every accepted byte is covered by the signature, and a
new key needs a new protocol version (``seg/v2``).

Key rotation. A robot trusts a set of public keys (``load_trusted_keys``: every
``<key_id>.pub`` in a directory), and each manifest names the key that signed it:

1. generate the new pair (``python -m segwire.model_keys generate --out DIR --key-id
   cloud-2026b``) and keep the ``.key`` file on the publishing host only;
2. add ``cloud-2026b.pub`` to every robot's trusted-key directory, and wait until the
   whole fleet has it (a robot without it rejects the next manifest as
   ``unknown_key`` and keeps its current model);
3. restart the publisher with the new key (``ModelPublisher(..., key_id="cloud-2026b")``):
   it re-signs the latest manifest, so the retained one moves to the new key, and
   signs every later one with it;
4. remove the old ``.pub`` from the robots, then destroy the old ``.key``. Partial
   downloads signed with the old key are dropped at the robot's next start and fetched
   again under the new one.

A leaked key is retired the same way, skipping the wait in step 2: until the robots
drop it, whoever holds it can sign models for them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .model_transfer import ModelLimits
from .signed_json import SignedRecordError, dump_json, sign_record, verify_signed_json

FORMATS = ("onnx",)
_U32_MAX = 2**32 - 1
_HEX64 = re.compile(r"[0-9a-f]{64}")
KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # also a file name (model_keys)
_SPEC_FIELDS = {"num_classes": int, "input_height": int, "input_width": int, "use_depth": bool}


class ManifestError(SignedRecordError):
    """A manifest that must not be used. ``reason`` is a short code for counters and
    status (oversized, malformed, unknown_key, bad_signature, inconsistent, too_large,
    chunk_size); the message says what is wrong for people."""


@dataclass(frozen=True)
class ModelManifest:
    version: int
    model_sha256: str
    size: int
    chunk_size: int
    chunk_sha256: list[str]
    format: str
    created_at: str
    spec: dict
    base_version: int | None = None
    notes: str = ""
    key_id: str = ""      # set by sign_manifest
    signature: str = ""   # set by sign_manifest

    def __post_init__(self) -> None:
        # Types and forms only; sizes and consistency depend on the receiver's limits
        # and are checked by verify_manifest (check_manifest).
        _check_int("version", self.version, 1)
        _check_hex("model_sha256", self.model_sha256)
        _check_int("size", self.size, 0)
        _check_int("chunk_size", self.chunk_size, 1)
        if not isinstance(self.chunk_sha256, list):
            raise ManifestError("malformed", f"chunk_sha256 must be a list, got {type(self.chunk_sha256).__name__}")
        for i, digest in enumerate(self.chunk_sha256):
            _check_hex(f"chunk_sha256[{i}]", digest)
        if self.format not in FORMATS:
            raise ManifestError("malformed", f"format must be one of {FORMATS}, got {self.format!r}")
        _check_time("created_at", self.created_at)
        _check_spec(self.spec)
        if self.base_version is not None:
            _check_int("base_version", self.base_version, 1)
        _check_str("notes", self.notes)
        if self.key_id and not KEY_ID.fullmatch(_check_str("key_id", self.key_id)):
            raise ManifestError("malformed", f"key_id {self.key_id!r} must be 1-64 of [A-Za-z0-9_-]")
        _check_str("signature", self.signature)

    @property
    def chunk_count(self) -> int:
        return len(self.chunk_sha256)

    def chunk_length(self, index: int) -> int:
        """Bytes in chunk ``index`` (all are chunk_size but the last)."""
        return min(self.chunk_size, self.size - index * self.chunk_size)

    def to_bytes(self) -> bytes:
        """The wire form, signature included."""
        return dump_json(dataclasses.asdict(self))


def sign_manifest(manifest: ModelManifest, private_key: Ed25519PrivateKey, key_id: str) -> ModelManifest:
    """The manifest with ``key_id`` set and signed by ``private_key``."""
    return sign_record(manifest, private_key, key_id)


def verify_manifest(manifest_bytes: bytes, trusted_keys: dict[str, Ed25519PublicKey],
                    limits: ModelLimits = ModelLimits()) -> ModelManifest:
    """Parse, authenticate and check a manifest received from anywhere; ManifestError
    (with a ``reason``) for anything that must not be used."""
    manifest = verify_signed_json(manifest_bytes, trusted_keys, record_type=ModelManifest, noun="manifest",
                                  max_bytes=limits.max_manifest_bytes, error=ManifestError)
    check_manifest(manifest, limits)
    return manifest


def check_manifest(manifest: ModelManifest, limits: ModelLimits) -> None:
    """Sizes within ``limits`` and chunk list consistent with size and chunk_size."""
    if not limits.min_chunk_size <= manifest.chunk_size <= limits.max_chunk_size:
        raise ManifestError("chunk_size", f"chunk_size {manifest.chunk_size} is outside "
                                          f"{limits.min_chunk_size}..{limits.max_chunk_size}")
    if not 0 < manifest.size <= limits.max_model_bytes:
        raise ManifestError("too_large" if manifest.size else "inconsistent",
                            f"model size {manifest.size} is outside 1..{limits.max_model_bytes} bytes")
    expected = math.ceil(manifest.size / manifest.chunk_size)
    if manifest.chunk_count != expected:
        raise ManifestError("inconsistent", f"{manifest.chunk_count} chunk hashes, but {manifest.size} bytes in "
                                            f"chunks of {manifest.chunk_size} make {expected}")
    if manifest.version > _U32_MAX or (manifest.base_version or 0) > _U32_MAX:
        raise ManifestError("inconsistent", "versions must fit 32 bits (chunk messages carry them)")
    if manifest.base_version is not None and manifest.base_version >= manifest.version:
        raise ManifestError("inconsistent", f"base_version {manifest.base_version} is not older than "
                                            f"version {manifest.version}")


def build_manifest(model_path: str | Path, version: int, spec: dict, chunk_size: int = 256 * 1024, *,
                   base_version: int | None = None, notes: str = "", fmt: str = "onnx") -> ModelManifest:
    """An unsigned manifest describing the file at ``model_path``."""
    with open(model_path, "rb") as f:
        whole, chunk_hashes, size = hash_chunks(f, chunk_size)
    return ModelManifest(version=version, model_sha256=whole, size=size, chunk_size=chunk_size,
                         chunk_sha256=chunk_hashes, format=fmt,
                         created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                         spec=dict(spec), base_version=base_version, notes=notes)


def hash_chunks(stream: BinaryIO, chunk_size: int) -> tuple[str, list[str], int]:
    """(sha256 of everything, sha256 of each chunk, size) of a stream read to its end."""
    whole = hashlib.sha256()
    chunk_hashes = []
    size = 0
    for chunk in iter_chunks(stream, chunk_size):
        whole.update(chunk)
        chunk_hashes.append(hashlib.sha256(chunk).hexdigest())
        size += len(chunk)
    return whole.hexdigest(), chunk_hashes, size


def iter_chunks(stream: BinaryIO, chunk_size: int) -> Iterator[bytes]:
    while chunk := stream.read(chunk_size):
        yield chunk


# --- field checks


def _check_str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ManifestError("malformed", f"{name} must be a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ManifestError("malformed", f"{name} is not valid Unicode (lone surrogate)") from None
    return value


def _check_int(name: str, value: Any, lo: int) -> int:
    # bool is an int in Python, but true is not a version in JSON
    if isinstance(value, bool) or not isinstance(value, int):
        raise ManifestError("malformed", f"{name} must be an integer, got {type(value).__name__}")
    if value < lo:
        raise ManifestError("malformed", f"{name} = {value} is below {lo}")
    return value


def _check_hex(name: str, value: Any) -> None:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise ManifestError("malformed", f"{name} must be 64 lowercase hex digits (SHA-256), got {value!r:.80}")


def _check_time(name: str, value: Any) -> None:
    _check_str(name, value)
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        raise ManifestError("malformed", f"{name} {value!r:.80} is not an ISO 8601 time") from None
    if stamp.tzinfo is None:
        raise ManifestError("malformed", f"{name} {value!r} lacks a UTC offset")


def _check_spec(spec: Any) -> None:
    if not isinstance(spec, dict):
        raise ManifestError("malformed", f"spec must be an object, got {type(spec).__name__}")
    if set(spec) != set(_SPEC_FIELDS):
        raise ManifestError("malformed", f"spec must have exactly the keys {sorted(_SPEC_FIELDS)}, "
                                         f"got {sorted(spec)}")
    for name, kind in _SPEC_FIELDS.items():
        value = spec[name]
        if kind is bool:
            if not isinstance(value, bool):
                raise ManifestError("malformed", f"spec.{name} must be true or false, got {value!r}")
        else:
            _check_int(f"spec.{name}", value, 1)
