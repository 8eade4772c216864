"""segwire.model_transfer (chunk, request and model status messages) and the model
push topics: round trips, every malformed input, fuzzing of the decoders.

    .venv/bin/python -m pytest tests/unit/test_model_transfer.py -q
"""
from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import segwire
from segwire import (CHUNK_MAGIC, ModelChunk, ModelLimits, ModelRequest, TransferStatus, TransferError, WireError,
                     decode_chunk, decode_transfer_status, decode_request, encode_chunk, encode_transfer_status,
                     encode_request)

LIMITS = ModelLimits(max_chunk_size=1024)


# --- topics ------------------------------------------------------------------------------


def test_model_topics():
    assert segwire.models_manifest_topic() == "seg/v1/models/default/manifest"
    assert segwire.models_manifest_topic("alps") == "seg/v1/models/alps/manifest"
    assert segwire.model_request_topic("dog-01") == "seg/v1/dog-01/model/request"
    assert segwire.model_chunk_topic("dog-01") == "seg/v1/dog-01/model/chunk"
    assert segwire.model_status_topic("dog-01") == "seg/v1/dog-01/model/status"
    assert segwire.ALL_MODEL_REQUESTS == "seg/v1/+/model/request"
    for make in (segwire.model_request_topic, segwire.model_chunk_topic, segwire.model_status_topic):
        assert segwire.robot_id_from_model_topic(make("dog-01")) == "dog-01"
    with pytest.raises(WireError):
        segwire.robot_id_from_topic(segwire.model_status_topic("dog-01"))  # not a hard/refined/status topic


@pytest.mark.parametrize("topic", ["seg/v1/dog/hard", "seg/v1/dog/model", "seg/v1/dog/model/other",
                                   "seg/v1/models/model/request", "seg/v1/+/model/request",
                                   "seg/v2/dog/model/chunk", "seg/v1/dog/model/chunk/x", None])
def test_robot_id_from_bad_model_topic(topic):
    with pytest.raises(WireError):
        segwire.robot_id_from_model_topic(topic)


@pytest.mark.parametrize("fleet", ["", "a/b", "+", "#", "x" * 65, 3])
def test_bad_fleet(fleet):
    with pytest.raises(WireError, match="fleet"):
        segwire.models_manifest_topic(fleet)


def test_models_is_still_not_a_robot_id():
    with pytest.raises(WireError, match="reserved"):
        segwire.model_request_topic("models")


# --- chunks ------------------------------------------------------------------------------


def test_chunk_layout_and_round_trip():
    data = encode_chunk(ModelChunk(7, 3, b"abc"), LIMITS)
    assert data == b"SEGC" + struct.pack("<BIII", 1, 7, 3, 3) + b"abc"
    assert decode_chunk(data, LIMITS) == ModelChunk(7, 3, b"abc")
    big = ModelChunk(2**32 - 1, 2**32 - 1, bytes(1024))
    assert decode_chunk(encode_chunk(big, LIMITS), LIMITS) == big


def header(version=1, model_version=7, index=0, length=3) -> bytes:
    return CHUNK_MAGIC + struct.pack("<BIII", version, model_version, index, length)


@pytest.mark.parametrize("data, message", [
    (b"", "shorter than the 17-byte header"),
    (header()[:16], "shorter"),
    (b"SEGW" + header()[4:] + b"abc", "does not start with b'SEGC'"),
    (header(version=2) + b"abc", "protocol version 2"),
    (header(model_version=0) + b"abc", "version is 0"),
    (header(length=0), "outside 1..1024"),
    (header(length=1025) + bytes(1025), "above the limit"),       # whole message too long
    (header(length=2000) + b"abc", "outside 1..1024"),
    (header(length=4) + b"abc", "declares 4 bytes but carries 3"),
    (header(length=2) + b"abc", "declares 2 bytes but carries 3"),
    ("text", "must be bytes"),
])
def test_malformed_chunks(data, message):
    with pytest.raises(TransferError, match=message):
        decode_chunk(data, LIMITS)


@pytest.mark.parametrize("chunk", [ModelChunk(0, 0, b"x"), ModelChunk(1, -1, b"x"), ModelChunk(1, 0, b""),
                                   ModelChunk(1, 0, bytes(1025)), ModelChunk(True, 0, b"x")])
def test_encode_refuses_bad_chunks(chunk):
    with pytest.raises(TransferError):
        encode_chunk(chunk, LIMITS)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_decode_chunk_raises_only_transfer_errors(tail):
    for data in (tail, CHUNK_MAGIC + tail, header(length=len(tail)) + tail):
        try:
            decode_chunk(data, LIMITS)
        except TransferError:
            pass


# --- requests ----------------------------------------------------------------------------


def test_request_round_trip_and_unknown_keys_ignored():
    data = encode_request(ModelRequest(7, [0, 5, 2]))
    assert json.loads(data) == {"version": 7, "chunks": [0, 5, 2]}
    assert decode_request(data) == ModelRequest(7, [0, 5, 2])
    assert decode_request(b'{"version": 7, "chunks": [1], "hint": "x"}') == ModelRequest(7, [1])


@pytest.mark.parametrize("data, message", [
    (b"{}", "lacks version, chunks"),
    (b'{"version": 7}', "lacks chunks"),
    (b"[]", "JSON object"),
    (b"nope", "not valid JSON"),
    (b'{"version": 0, "chunks": [1]}', "version"),
    (b'{"version": "7", "chunks": [1]}', "version must be an integer"),
    (b'{"version": 7, "chunks": []}', "outside 1..64"),
    (b'{"version": 7, "chunks": 3}', "must be a list"),
    (b'{"version": 7, "chunks": [1, 1]}', "twice"),
    (b'{"version": 7, "chunks": [-1]}', "chunks\\[0\\]"),
    (b'{"version": 7, "chunks": [1.5]}', "integer"),
    (b'{"version": 7, "chunks": [true]}', "integer"),
    (json.dumps({"version": 7, "chunks": list(range(65))}).encode(), "outside 1..64"),
    (b'{"version": 7, "chunks": [1], "pad": "' + b"x" * 5000 + b'"}', "above the limit 4096"),
])
def test_malformed_requests(data, message):
    with pytest.raises(TransferError, match=message):
        decode_request(data)


def test_encode_refuses_oversized_requests():
    with pytest.raises(TransferError, match="outside 1..64"):
        encode_request(ModelRequest(1, list(range(65))))


# --- model status --------------------------------------------------------------------------


def test_model_status_round_trip():
    status = TransferStatus("dog-01", "downloading", 7, 6, received=3, total=12, reason="downgrade",
                         last_error="manifest version 5 is older", stamp_ns=123, counters={"chunks_received": 3})
    data = encode_transfer_status(status)
    assert json.loads(data)["protocol_version"] == 1
    assert decode_transfer_status(data) == status


@pytest.mark.parametrize("change, message", [
    ({"state": "busy"}, "state"), ({"robot_id": "models"}, "reserved"), ({"version": 0}, "version"),
    ({"current_version": -1}, "current_version"), ({"counters": {"a": -1}}, "counters"),
    ({"protocol_version": 2}, "protocol_version"), ({"received": None}, "received"),
])
def test_malformed_model_status(change, message):
    obj = json.loads(encode_transfer_status(TransferStatus("dog-01", "idle", None, 0)))
    obj.update(change)
    with pytest.raises(TransferError, match=message):
        decode_transfer_status(json.dumps(obj).encode())


def test_model_status_size_limit():
    status = TransferStatus("dog-01", "rejected", None, 0, last_error="x" * 20_000)
    with pytest.raises(TransferError, match="above the limit"):
        encode_transfer_status(status)
    with pytest.raises(TransferError, match="above the limit"):
        decode_transfer_status(b" " * 20_000)
