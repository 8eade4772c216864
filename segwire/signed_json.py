"""Ed25519-signed JSON records: the part model manifests and model commands share.

A record is a frozen dataclass with ``key_id`` and ``signature`` fields, sent as one
JSON object with exactly its fields. The signature covers the canonical bytes: every
field but ``signature``, sorted keys, no whitespace, non-ASCII as itself, UTF-8.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from typing import Callable, TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import WireError
from .payload import _load_json

Record = TypeVar("Record")


class SignedRecordError(WireError):
    """A record that must not be used; ``reason`` is a short code for counters and status."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason


def dump_json(obj: dict) -> bytes:
    """Canonical JSON: what is signed and what is sent."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def canonical_bytes(record) -> bytes:
    """What the signature covers: every field but ``signature``, canonical JSON."""
    fields = dataclasses.asdict(record)
    del fields["signature"]
    return dump_json(fields)


def sign_record(record: Record, private_key: Ed25519PrivateKey, key_id: str) -> Record:
    """The record with ``key_id`` set and signed by ``private_key``."""
    unsigned = dataclasses.replace(record, key_id=key_id, signature="")
    signature = private_key.sign(canonical_bytes(unsigned))
    return dataclasses.replace(unsigned, signature=base64.b64encode(signature).decode("ascii"))


def verify_signed_json(data: bytes, trusted_keys: dict[str, Ed25519PublicKey], *, record_type: type[Record],
                       noun: str, max_bytes: int, error: Callable[[str, str], SignedRecordError]) -> Record:
    """Parse ``data`` as a ``record_type`` signed by one of ``trusted_keys``.

    Raises ``error(reason, message)`` with reason oversized, malformed, unknown_key or
    bad_signature; ``noun`` ("manifest", "command") names the record in the messages.
    The record's own checks (its __post_init__) raise their own errors unchanged.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise error("malformed", f"{noun} must be bytes, got {type(data).__name__}")
    if len(data) > max_bytes:  # before parsing: JSON parsing costs memory
        raise error("oversized", f"{noun} is {len(data)} bytes, above the limit {max_bytes}")
    try:
        obj = _load_json(bytes(data), noun)
    except WireError as e:
        raise error("malformed", str(e)) from None
    names = [f.name for f in dataclasses.fields(record_type)]
    # Every key is required and no other is allowed: all accepted bytes are signed, and
    # a new key needs a new protocol version.
    missing = [n for n in names if n not in obj]
    unknown = sorted(set(obj) - set(names))
    if missing or unknown:
        raise error("malformed", f"{noun} " + "; ".join(
            part for part in (missing and f"lacks {', '.join(missing)}",
                              unknown and f"has unknown key(s) {', '.join(unknown)}") if part))
    record = record_type(**obj)
    if not record.key_id:
        raise error("malformed", f"{noun} is not signed (empty key_id)")
    public_key = trusted_keys.get(record.key_id)
    if public_key is None:
        raise error("unknown_key", f"signed with key {record.key_id!r}, which this robot does not trust "
                                   f"(trusted: {', '.join(sorted(trusted_keys)) or 'none'})")
    try:
        signature = base64.b64decode(record.signature, validate=True)
    except (binascii.Error, ValueError):
        raise error("bad_signature", "signature is not base64") from None
    try:
        public_key.verify(signature, canonical_bytes(record))
    except InvalidSignature:
        raise error("bad_signature", f"the signature does not verify under key {record.key_id!r}: "
                                     f"the {noun} was altered or signed by another key") from None
    return record
