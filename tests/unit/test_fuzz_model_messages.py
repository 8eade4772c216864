"""Property tests of the model push decoders: chunk requests, model status, chunks and
signed manifests. Whatever arrives, a decoder returns an object that round-trips or
raises the error its API documents (TransferError, ManifestError), never anything else.
bench/fuzz.py runs the same idea for 100,000s of cases; this keeps CI at a few seconds.

    .venv/bin/python -m pytest tests/unit/test_fuzz_model_messages.py -q
"""
from __future__ import annotations

import base64
import json
import struct

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segwire import (CHUNK_MAGIC, ModelChunk, ModelLimits, TransferStatus, TransferError, decode_chunk,
                     decode_transfer_status, decode_request, encode_chunk, encode_transfer_status, encode_request)
from segwire.model_manifest import ManifestError, ModelManifest, sign_manifest, verify_manifest

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

EDGE_INTS = st.sampled_from([0, 1, -1, 63, 64, 65, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), EDGE_INTS,
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) |
                           st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=8)


def json_bytes(obj) -> bytes:
    # surrogatepass: a lone surrogate from st.text() is sent as the bytes a buggy sender would write
    return json.dumps(obj).encode("utf-8", "surrogatepass")


def with_changes(base: dict, changes: dict, dropped: list[str]) -> dict:
    out = {**base, **changes}
    for name in dropped:
        out.pop(name, None)
    return out


# --- chunk requests ------------------------------------------------------------------------


@FUZZ
@given(version=st.one_of(st.integers(1, 2**32 - 1), JSON_VALUES),
       chunks=st.one_of(st.lists(st.integers(0, 2**32 - 1), max_size=70), st.lists(JSON_VALUES, max_size=5),
                        JSON_VALUES),
       extra=st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=2),
       dropped=st.lists(st.sampled_from(["version", "chunks"]), max_size=1))
def test_request_decoder(version, chunks, extra, dropped):
    data = json_bytes(with_changes({**extra, "version": version, "chunks": chunks}, {}, dropped))
    try:
        request = decode_request(data)
    except TransferError:
        return
    assert request.version == version and request.chunks == chunks
    assert decode_request(encode_request(request)) == request


# --- model status --------------------------------------------------------------------------

STATUS = json.loads(encode_transfer_status(TransferStatus("dog-01", "downloading", 7, 6, 3, 10, "", "", 5, {"c": 3})))


@FUZZ
@given(changes=st.dictionaries(st.sampled_from(sorted(STATUS) + ["unknown"]), JSON_VALUES, max_size=3),
       dropped=st.lists(st.sampled_from(sorted(STATUS)), max_size=1))
def test_model_status_decoder(changes, dropped):
    try:
        status = decode_transfer_status(json_bytes(with_changes(STATUS, changes, dropped)))
    except TransferError:
        return
    assert decode_transfer_status(encode_transfer_status(status)) == status


# --- chunks --------------------------------------------------------------------------------

LIMITS = ModelLimits(min_chunk_size=1024, max_chunk_size=1024)


@FUZZ
@given(protocol=st.integers(0, 255), version=st.integers(0, 2**32 - 1), index=st.integers(0, 2**32 - 1),
       data=st.binary(max_size=1100), declared=st.one_of(st.none(), st.integers(0, 2**32 - 1)))
def test_chunk_decoder(protocol, version, index, data, declared):
    length = len(data) if declared is None else declared
    message = CHUNK_MAGIC + struct.pack("<BIII", protocol, version, index, length) + data
    try:
        chunk = decode_chunk(message, LIMITS)
    except TransferError:
        assert not (protocol == 1 and version > 0 and length == len(data) and 1 <= len(data) <= 1024)
        return
    assert chunk == ModelChunk(version, index, data)
    assert encode_chunk(chunk, LIMITS) == message


# --- signed manifests ----------------------------------------------------------------------

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
TRUSTED = {"ci-key": KEY.public_key()}
H = "ab" * 32
MANIFEST = json.loads(sign_manifest(ModelManifest(
    version=3, model_sha256=H, size=2500, chunk_size=1024, chunk_sha256=[H, H, H], format="onnx",
    created_at="2026-11-21T10:00:00+00:00",
    spec={"num_classes": 30, "input_height": 480, "input_width": 640, "use_depth": True}, base_version=2,
    notes="n"), KEY, "ci-key").to_bytes())
FIELD_VALUES = st.one_of(JSON_VALUES, st.sampled_from([H, [H], [H] * 4, "2026-01-01T00:00:00", "onnx", "ci-key",
                                                       {"num_classes": 1, "input_height": 1, "input_width": 1,
                                                        "use_depth": False}, 1024, 4096, 2**32]))


def signed_as_is(obj: dict) -> dict:
    """`obj` with a valid signature over whatever it now holds (canonical JSON as the spec says)."""
    unsigned = {k: v for k, v in obj.items() if k != "signature"}
    canonical = json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return {**obj, "signature": base64.b64encode(KEY.sign(canonical.encode("utf-8", "surrogatepass"))).decode()}


@FUZZ
@given(changes=st.dictionaries(st.sampled_from(sorted(MANIFEST) + ["unknown"]), FIELD_VALUES, min_size=1,
                               max_size=3),
       dropped=st.lists(st.sampled_from(sorted(MANIFEST)), max_size=1), resign=st.booleans())
def test_manifest_verifier(changes, dropped, resign):
    obj = with_changes(MANIFEST, changes, dropped)
    if resign:   # so the checks after the signature (sizes, consistency) see the change
        obj = signed_as_is(obj)
    try:
        manifest = verify_manifest(json_bytes(obj), TRUSTED, LIMITS)
    except ManifestError as e:
        assert e.reason in {"oversized", "malformed", "unknown_key", "bad_signature", "inconsistent", "too_large",
                            "chunk_size"}
        return
    assert resign or obj == MANIFEST, "a change not signed again was accepted"
    assert verify_manifest(manifest.to_bytes(), TRUSTED, LIMITS) == manifest


@FUZZ
@given(st.one_of(st.binary(max_size=400), JSON_VALUES.map(json_bytes)))
def test_manifest_verifier_on_anything(data):
    try:
        verify_manifest(data, TRUSTED, LIMITS)
    except ManifestError:
        return
    raise AssertionError(f"accepted {data!r}")
