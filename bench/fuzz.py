#!/usr/bin/env python3
"""Long fuzz run of every decoder that reads bytes from outside the process.

Targets: the segwire payload decoders (hard frame, refined result, robot status),
the model push messages (chunk, request, model status), the signed model manifest,
and the node's image converters (raw sensor_msgs/Image, CompressedImage).

Each case is one input: a valid seed, a structure-aware mutation of one (fields of
the JSON metadata, section table, PNG IHDR / JPEG SOF sizes, manifest fields re-signed
so they get past the signature), byte-level mutations, or random bytes. A case passes
when the decoder returns an object that re-encodes (and reads back equal) or raises the
error type its API documents; any other exception, a case slower than --slow-ms, a hang
(no progress for --hang-s: the worker is killed) or a crash (the worker dies) fails.

Each target runs in its own worker process, so a crash or hang names the target and
case index; cases are a pure function of (--seed, target, index), so one is replayed
with `--targets T --start I --cases 1`. The worker's VmRSS is sampled every
--rss-every cases after a warm-up, to show memory stays bounded.

  .venv/bin/python bench/fuzz.py --cases 100000          # prints one JSON line
"""
from __future__ import annotations

import argparse
import base64
import json
import multiprocessing as mp
import random
import struct
import sys
import time
import traceback
import zlib
from pathlib import Path
from typing import Any, Callable, NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "ros2_ws" / "src" / "seg_edge_node")]

import cv2  # noqa: E402
import numpy as np  # noqa: E402

UUIDS = ["3f2b8c1e-8d4a-4c3e-9b7a-0c1d2e3f4a5b", "00000000-0000-4000-8000-000000000000"]

# --- generic mutators --------------------------------------------------------------------

INTERESTING_INTS = [0, 1, -1, 2, 7, 8, 9, 255, 256, 4095, 4096, 4097, 65535, 65536, 2**31 - 1, 2**31,
                    2**32 - 1, 2**32, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, 10**30]
INTERESTING_JSON: list[Any] = INTERESTING_INTS + [
    None, True, False, 0.0, -0.0, 0.5, 1.5, -1.5, 1e308, 5e-324, "", "x", "x" * 5000, "\ud800", "\u0000",
    "🐕", "models", "dog-01", "online", "offline", "idle", "onnx", UUIDS[0], UUIDS[0].upper(), [], {},
    [1, 2], [0] * 100, {"a": 1}, {"a": [1]}, "2026-11-21T10:00:00+00:00", "2026-11-21T10:00:00", "ab" * 32]
# Raw JSON text no json.dumps writes: literals the decoders must refuse, huge numbers.
RAW_TOKENS = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1" * 5000, "-0", "0.0e0", "1E2",
              "[" * 3000 + "]" * 3000, "{\"a\":" * 2000 + "1" + "}" * 2000, '"\\ud800"', '"\\u0000"']


def mutate_bytes(rng: random.Random, data: bytes, pool: list[bytes], max_ops: int = 4) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, max_ops)):
        op = rng.randrange(9)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[pos % len(buf)] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            buf[pos % len(buf)] = rng.choice([0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)])
        elif op == 2:
            buf[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif op == 3:
            del buf[pos:pos + rng.randint(1, 64)]
        elif op == 4:
            del buf[pos:]
        elif op == 5 and buf:   # repeat a slice
            end = min(len(buf), pos + rng.randint(1, 64))
            buf[pos:pos] = buf[pos:end] * rng.randint(1, 4)
        elif op == 6 and len(buf) >= pos + 4:   # a little-endian or big-endian u32 set to an edge value
            fmt = rng.choice(["<I", ">I"])
            struct.pack_into(fmt, buf, pos, rng.choice(INTERESTING_INTS) & 0xFFFFFFFF)
        elif op == 7 and pool:  # splice with another seed
            other = rng.choice(pool)
            cut = rng.randrange(len(other) + 1)
            buf = buf[:pos] + bytearray(other[cut:])
        elif op == 8 and len(buf) >= pos + 2:
            struct.pack_into(">H", buf, pos, rng.choice([0, 1, 2, 0xFFFF, 0x8000, 0xFFD8, 0xFFC0, 0xFFDA]))
    return bytes(buf)


def mutate_json_value(rng: random.Random, obj: Any, depth: int = 0) -> Any:
    """A copy of `obj` with one value replaced, a key removed or an unknown key added."""
    if isinstance(obj, dict) and obj and (depth == 0 or rng.random() < 0.7):
        out = dict(obj)
        key = rng.choice(list(out))
        action = rng.randrange(4)
        if action == 0:
            del out[key]
        elif action == 1:
            out[rng.choice(["x", "extra", "protocol_version", "signature", "\ud800", ""])] = \
                rng.choice(INTERESTING_JSON)
        elif action == 2 and isinstance(out[key], (dict, list)) and out[key]:
            out[key] = mutate_json_value(rng, out[key], depth + 1)
        else:
            out[key] = rng.choice(INTERESTING_JSON)
        return out
    if isinstance(obj, list) and obj:
        out = list(obj)
        i = rng.randrange(len(out))
        action = rng.randrange(3)
        if action == 0:
            del out[i]
        elif action == 1:
            out.insert(i, rng.choice(INTERESTING_JSON + out))
        else:
            out[i] = rng.choice(INTERESTING_JSON)
        return out
    return rng.choice(INTERESTING_JSON)


def dump_json(rng: random.Random, obj: Any, sort_keys: bool = False) -> bytes:
    """JSON text of `obj`, sometimes with a raw token, a duplicated key, a BOM or junk in it."""
    text = json.dumps(obj, sort_keys=sort_keys, separators=(",", ":"))
    roll = rng.random()
    if roll < 0.08 and ":" in text:
        cut = rng.choice([i for i, c in enumerate(text) if c == ":"])
        end = text.find(",", cut)
        end = len(text) - 1 if end < 0 else end
        text = text[:cut + 1] + rng.choice(RAW_TOKENS) + text[end:]
    elif roll < 0.12 and text.startswith("{") and len(text) > 2:
        first = text[1:].split(",", 1)[0].rstrip("}")
        text = "{" + first + "," + text[1:]                       # duplicate key
    elif roll < 0.14:
        text = "\ufeff" + text
    elif roll < 0.16:
        text = text + rng.choice([" ", "x", "{}", "\x00"])
    raw = text.encode("utf-8", "surrogatepass")
    if rng.random() < 0.03:
        raw = raw.replace(b"\"", b"\"\xff", 1)                    # not UTF-8
    return raw


# --- seeds ---------------------------------------------------------------------------------


def smooth_rgb(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 200 / w, y * 200 / h, 100 + 0 * x], -1) + rng.normal(0, 3, (h, w, 3))
    return np.clip(rgb, 0, 255).astype(np.uint8)


def png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def jpeg(image: np.ndarray, *params: int) -> bytes:
    return cv2.imencode(".jpg", image, list(params))[1].tobytes()


def with_png_size(data: bytes, rng: random.Random) -> bytes:
    """Edit IHDR: width, height, bit depth or colour type; the CRC fixed or not."""
    out = bytearray(data)
    field = rng.randrange(4)
    if field < 2:
        struct.pack_into(">I", out, 16 + 4 * field, rng.choice(INTERESTING_INTS) & 0xFFFFFFFF)
    else:
        out[24 + field - 2] = rng.choice([0, 1, 2, 3, 4, 6, 8, 16, 255])
    if rng.random() < 0.8:
        struct.pack_into(">I", out, 29, zlib.crc32(bytes(out[12:29])))
    return bytes(out)


def with_jpeg_size(data: bytes, rng: random.Random) -> bytes:
    """Edit the SOF: precision, height, width or component count."""
    out = bytearray(data)
    sof = next((i for i in range(2, len(out) - 9) if out[i] == 0xFF and out[i + 1] in (0xC0, 0xC1, 0xC2)), None)
    if sof is None:
        return data
    field = rng.randrange(4)
    if field == 0:
        out[sof + 4] = rng.choice([0, 8, 12, 16])
    elif field < 3:
        struct.pack_into(">H", out, sof + 5 + 2 * (field - 1), rng.choice([0, 1, 4096, 4097, 20000, 65535]))
    else:
        out[sof + 9] = rng.choice([0, 1, 2, 3, 4, 255])
    return bytes(out)


def image_pool() -> list[bytes]:
    """Encoded images of every kind a section could wrongly carry."""
    rgb = smooth_rgb(12, 16, 1)
    grey = rgb[..., 0].copy()
    return [
        png(rgb), png(grey), png(grey.astype(np.uint16) * 257), png(cv2.cvtColor(rgb, cv2.COLOR_BGR2BGRA)),
        png(rgb.astype(np.uint16) * 257), png(smooth_rgb(13, 16, 2)), png(grey[:1, :1]),
        jpeg(rgb), jpeg(grey), jpeg(rgb, cv2.IMWRITE_JPEG_PROGRESSIVE, 1), jpeg(smooth_rgb(12, 17, 3)),
        jpeg(rgb, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444),
        png(np.zeros((1, 4096), np.uint8)), jpeg(np.zeros((4096, 1, 3), np.uint8)),
    ]


def mutate_image(rng: random.Random, blob: bytes, pool: list[bytes]) -> bytes:
    roll = rng.random()
    if roll < 0.3:
        return rng.choice(pool)
    if roll < 0.5 and blob.startswith(b"\x89PNG") and len(blob) >= 33:
        return with_png_size(blob, rng)
    if roll < 0.6 and blob.startswith(b"\xff\xd8"):
        return with_jpeg_size(blob, rng)
    return mutate_bytes(rng, blob, pool)


# --- segwire payloads ----------------------------------------------------------------------


class Message(NamedTuple):
    """A binary SEGW message taken apart, so fields can be mutated one at a time."""
    kind: int
    meta: dict
    sections: list[tuple[int, int, bytes]]


def split_message(data: bytes) -> Message:
    (meta_len,) = struct.unpack_from("<I", data, 6)
    meta = json.loads(data[10:10 + meta_len])
    pos = 10 + meta_len
    count, pos, sections = data[pos], pos + 1, []
    for _ in range(count):
        sid, codec, length = struct.unpack_from("<BBI", data, pos)
        sections.append((sid, codec, data[pos + 6:pos + 6 + length]))
        pos += 6 + length
    return Message(data[5], meta, sections)


def pack_message(rng: random.Random, msg: Message, meta_bytes: bytes) -> bytes:
    version, kind, meta_len = 1, msg.kind, len(meta_bytes)
    count = len(msg.sections)
    roll = rng.random()
    if roll < 0.03:
        version = rng.choice([0, 2, 255])
    elif roll < 0.06:
        kind = rng.choice([0, 1, 2, 3, 255])
    elif roll < 0.10:
        meta_len = max(0, meta_len + rng.choice([-2, -1, 1, 2, 10**6, 2**32 - 1 - meta_len]))
    elif roll < 0.13:
        count = rng.choice([0, count - 1, count + 1, 9, 255]) % 256
    out = [b"SEGW", struct.pack("<BBI", version, kind, meta_len & 0xFFFFFFFF), meta_bytes, bytes([count])]
    for sid, codec, blob in msg.sections:
        length = len(blob)
        if rng.random() < 0.03:
            length = max(0, length + rng.choice([-1, 1, 2**31]))
        out += [struct.pack("<BBI", sid, codec, length & 0xFFFFFFFF), blob]
    return b"".join(out)


def mutate_message(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    msg = split_message(data)
    meta, sections = msg.meta, list(msg.sections)
    for _ in range(rng.randint(1, 3)):
        what = rng.randrange(6)
        if what <= 1:
            meta = mutate_json_value(rng, meta)
        elif what == 2 and sections:
            i = rng.randrange(len(sections))
            sid, codec, blob = sections[i]
            sections[i] = (sid, codec, mutate_image(rng, blob, pool))
        elif what == 3 and sections:
            i = rng.randrange(len(sections))
            sid, codec, blob = sections[i]
            if rng.random() < 0.5:
                sid = rng.choice([0, 1, 2, 3, 4, 5, 255])
            else:
                codec = rng.choice([0, 1, 2, 3, 255])
            sections[i] = (sid, codec, blob)
        elif what == 4 and sections:
            action = rng.randrange(3)
            if action == 0:
                del sections[rng.randrange(len(sections))]
            elif action == 1:
                sections.append(rng.choice(sections))
            else:
                rng.shuffle(sections)
        else:
            sections.append((rng.choice([1, 2, 3, 4]), rng.choice([1, 2]), rng.choice(pool)))
    return pack_message(rng, Message(msg.kind, meta, sections), dump_json(rng, meta))


def segwire_seeds() -> dict[str, list[bytes]]:
    from segwire import HardFrame, RefinedResult, RobotStatus, encode_hard_frame, encode_refined, encode_status

    def frame(h: int, w: int, seed: int, depth: bool, extra: dict) -> HardFrame:
        rng = np.random.default_rng(seed)
        depth_m = (rng.integers(0, 20000, (h, w)) / 1000).astype(np.float32) if depth else None
        return HardFrame(robot_id="dog-01", frame_uuid=UUIDS[seed % 2], stamp_ns=1_700_000_000_000_000_000 + seed,
                         frame_id="cam", model_version="rfnet-1", mining_policy="entropy", mining_score=0.75,
                         rgb=smooth_rgb(h, w, seed), depth_m=depth_m,
                         edge_labels=rng.integers(0, 30, (h, w)).astype(np.uint8), extra=extra)

    hard = [
        encode_hard_frame(frame(12, 16, 0, True, {"n": 1, "note": "Hund"})),
        encode_hard_frame(frame(9, 7, 1, False, {}), "png"),
        encode_hard_frame(frame(16, 12, 2, True, {}), "png", depth_unit_mm=39),
        encode_hard_frame(frame(24, 32, 3, True, {"ok": True, "x": None}), jpeg_quality=40),
    ]
    labels = (np.arange(12 * 16).reshape(12, 16) % 7).astype(np.uint8)
    refined = [encode_refined(RefinedResult("dog-01", UUIDS[0], 5, "cam", "rfnet-1", "sam+vote", labels, "b1")),
               encode_refined(RefinedResult("d", UUIDS[1], 0, "", "", "", labels[:1, :3], ""))]
    status = [encode_status(RobotStatus("dog-01", "online", 5, "rfnet-1", {"frames": 10, "hard": 3})),
              encode_status(RobotStatus("d", "offline", 0, ""))]
    return {"hard_frame": hard, "refined": refined, "status": status}


# --- targets -------------------------------------------------------------------------------


class Target(NamedTuple):
    make_case: Callable[[random.Random], Any]
    run: Callable[[Any], None]      # raises AssertionError when a returned object is invalid
    allowed: tuple[type, ...]       # the exceptions the API documents


def generic_case(rng: random.Random, seeds: list[bytes], structured: Callable | None,
                 pool: list[bytes], prefixes: list[bytes]) -> bytes:
    roll = rng.random()
    if roll < 0.05:
        return rng.choice(seeds)
    if roll < 0.50 and structured is not None:
        return structured(rng, rng.choice(seeds))
    if roll < 0.90:
        return mutate_bytes(rng, rng.choice(seeds), pool)
    return rng.choice(prefixes) + rng.randbytes(rng.randint(0, 300))


def segwire_targets() -> dict[str, Target]:
    from segwire import (WireError, decode_hard_frame, decode_refined, decode_status, encode_hard_frame,
                         encode_refined, encode_status)
    seeds = segwire_seeds()
    images = image_pool()
    pool = images + [s for group in seeds.values() for s in group]

    def json_structured(rng, data):
        return dump_json(rng, mutate_json_value(rng, json.loads(data)))

    def check_hard(data):
        frame = decode_hard_frame(data)
        again = decode_hard_frame(encode_hard_frame(frame, "png", depth_unit_mm=1000))
        assert (again.frame_uuid, again.extra, again.mining_score) == (frame.frame_uuid, frame.extra,
                                                                         frame.mining_score)
        assert np.array_equal(again.rgb, frame.rgb) and np.array_equal(again.edge_labels, frame.edge_labels)

    def check_refined(data):
        result = decode_refined(data)
        again = decode_refined(encode_refined(result))
        assert again.frame_uuid == result.frame_uuid and np.array_equal(again.labels, result.labels)

    def check_status(data):
        status = decode_status(data)
        assert decode_status(encode_status(status)) == status

    binary = [b"", b"SEGW", b"SEGW\x01\x01", b"SEGW\x01\x02"]
    return {
        "hard_frame": Target(lambda rng: generic_case(rng, seeds["hard_frame"], lambda r, d: mutate_message(
            r, d, images), pool, binary), check_hard, (WireError,)),
        "refined": Target(lambda rng: generic_case(rng, seeds["refined"], lambda r, d: mutate_message(
            r, d, images), pool, binary), check_refined, (WireError,)),
        "status": Target(lambda rng: generic_case(rng, seeds["status"], json_structured, pool, [b"", b"{"]),
                         check_status, (WireError,)),
    }


def transfer_targets() -> dict[str, Target]:
    from segwire import (ModelChunk, ModelRequest, TransferStatus, TransferError, decode_chunk, decode_transfer_status,
                         decode_request, encode_chunk, encode_transfer_status, encode_request)
    chunks = [encode_chunk(ModelChunk(1, 0, b"x")), encode_chunk(ModelChunk(7, 3, bytes(range(256)) * 20)),
              encode_chunk(ModelChunk(2**32 - 1, 2**32 - 1, b"\0" * 100))]
    requests = [encode_request(ModelRequest(7, [0, 5, 2])), encode_request(ModelRequest(1, list(range(64))))]
    statuses = [encode_transfer_status(TransferStatus("dog-01", "downloading", 7, 6, 3, 10, "", "", 5, {"chunks": 3})),
                encode_transfer_status(TransferStatus("d", "idle", None, 0))]
    pool = chunks + requests + statuses

    def chunk_structured(rng, data):
        out = bytearray(data)
        field = rng.choice([(4, "<B"), (5, "<I"), (9, "<I"), (13, "<I")])
        struct.pack_into(field[1], out, field[0], rng.choice(INTERESTING_INTS) & (0xFF if field[1] == "<B"
                                                                                  else 0xFFFFFFFF))
        return bytes(out) if rng.random() < 0.7 else mutate_bytes(rng, bytes(out), pool, 1)

    def json_structured(rng, data):
        return dump_json(rng, mutate_json_value(rng, json.loads(data)))

    def check_chunk(data):
        chunk = decode_chunk(data)
        assert decode_chunk(encode_chunk(chunk)) == chunk

    def check_request(data):
        request = decode_request(data)
        assert decode_request(encode_request(request)) == request

    def check_status(data):
        status = decode_transfer_status(data)
        assert decode_transfer_status(encode_transfer_status(status)) == status

    return {
        "model_chunk": Target(lambda rng: generic_case(rng, chunks, chunk_structured, pool, [b"", b"SEGC",
                                                                                            b"SEGC\x01"]),
                              check_chunk, (TransferError,)),
        "model_request": Target(lambda rng: generic_case(rng, requests, json_structured, pool, [b"", b"{"]),
                                check_request, (TransferError,)),
        "model_status": Target(lambda rng: generic_case(rng, statuses, json_structured, pool, [b"", b"{"]),
                               check_status, (TransferError,)),
    }


def manifest_target() -> dict[str, Target]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from segwire import ModelLimits
    from segwire.model_manifest import ManifestError, ModelManifest, sign_manifest, verify_manifest

    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))   # fixed: cases must be reproducible
    trusted = {"fuzz-key": key.public_key()}
    limits = ModelLimits(min_chunk_size=1024)
    h = "ab" * 32
    seeds = [sign_manifest(ModelManifest(version=3, model_sha256=h, size=2500, chunk_size=1024,
                                         chunk_sha256=[h, "cd" * 32, h], format="onnx",
                                         created_at="2026-11-21T10:00:00+00:00",
                                         spec={"num_classes": 30, "input_height": 480, "input_width": 640,
                                               "use_depth": True}, base_version=2, notes="Hund 🐕"),
                           key, "fuzz-key").to_bytes(),
             sign_manifest(ModelManifest(version=1, model_sha256=h, size=1024, chunk_size=1024, chunk_sha256=[h],
                                         format="onnx", created_at="2026-01-01T00:00:00-05:00",
                                         spec={"num_classes": 2, "input_height": 32, "input_width": 32,
                                               "use_depth": False}), key, "fuzz-key").to_bytes()]

    def structured(rng, data):
        obj = mutate_json_value(rng, json.loads(data))
        if isinstance(obj, dict) and rng.random() < 0.6:
            # Re-sign what the mutation left, so the checks after the signature run too.
            unsigned = {k: v for k, v in obj.items() if k != "signature"}
            canonical = json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            try:
                obj["signature"] = base64.b64encode(key.sign(canonical.encode("utf-8"))).decode()
            except UnicodeEncodeError:
                pass   # a lone surrogate: no canonical bytes to sign
        return dump_json(rng, obj, sort_keys=rng.random() < 0.5)

    def check(data):
        manifest = verify_manifest(data, trusted, limits)
        assert verify_manifest(manifest.to_bytes(), trusted, limits) == manifest

    return {"manifest": Target(lambda rng: generic_case(rng, seeds, structured, seeds, [b"", b"{"]),
                               check, (ManifestError,))}


def image_targets() -> dict[str, Target]:
    from seg_edge_node.image_conversion import (ImageConversionError, compressed_to_rgb, image_to_depth_m,
                                                image_to_rgb)
    from sensor_msgs.msg import CompressedImage, Image

    bpp = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "mono16": 2, "16UC1": 2, "32FC1": 4}
    encodings = list(bpp) + ["yuv422", "", "RGB8", "8UC3", None, 7]

    def raw_case(rng):
        encoding = rng.choice(list(bpp))
        h, w = rng.randint(1, 12), rng.randint(1, 12)
        step = w * bpp[encoding] + rng.choice([0, 0, 4, 8])
        data = rng.randbytes(step * h)
        fields = {"height": h, "width": w, "step": step, "encoding": encoding, "is_bigendian": rng.choice([0, 1]),
                  "data": data}
        msg = Image(check_fields=False, **fields)
        for _ in range(rng.randint(0, 3)):
            name = rng.choice(list(fields))
            if name == "encoding":
                value = rng.choice(encodings)
            elif name == "data":
                value = rng.choice([data[:rng.randrange(len(data) + 1)], data + b"\0" * 8, list(data),
                                    [256] * len(data), "text", None, memoryview(data), b""])
            elif name == "is_bigendian":
                value = rng.choice([0, 1, 255, "x"])
            else:
                value = rng.choice([fields[name] + rng.randint(-3, 3), rng.choice(INTERESTING_INTS), 1.5, None, "3"])
            try:
                setattr(msg, name, value)
            except (TypeError, ValueError, AssertionError, OverflowError):
                pass   # the message type itself refuses it: no subscriber can receive it
        return msg

    def check_raw(msg):
        refused = []
        for convert, channels in ((image_to_rgb, (3,)), (image_to_depth_m, ())):
            try:
                out = convert(msg)
            except ImageConversionError as e:
                refused.append(e)
                continue
            assert out.shape == (msg.height, msg.width) + channels and out.flags.c_contiguous
        if len(refused) == 2:
            raise refused[0]   # counted as rejected: neither converter could read it

    pool = image_pool()

    def compressed_case(rng):
        return CompressedImage(check_fields=False, format=rng.choice(["jpeg", "png", "", "rgb8; jpeg compressed bgr8"]),
                               data=generic_case(rng, pool, lambda r, d: mutate_image(r, d, pool), pool,
                                                 [b"", b"\xff\xd8", b"\x89PNG\r\n\x1a\n"]))

    def check_compressed(msg):
        out = compressed_to_rgb(msg)
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3

    return {"image_raw": Target(raw_case, check_raw, (ImageConversionError,)),
            "image_compressed": Target(compressed_case, check_compressed, (ImageConversionError,))}


def all_targets() -> dict[str, Callable[[], dict[str, Target]]]:
    """Target name -> the factory that builds it (in the worker: imports stay out of the parent)."""
    factories = (segwire_targets, transfer_targets, manifest_target, image_targets)
    names = {"hard_frame": 0, "refined": 0, "status": 0, "model_chunk": 1, "model_request": 1,
             "model_status": 1, "manifest": 2, "image_raw": 3, "image_compressed": 3}
    return {name: factories[i] for name, i in names.items()}


# --- worker and supervisor -----------------------------------------------------------------


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def case_rng(seed: int, target: str, index: int) -> random.Random:
    return random.Random(f"{seed}/{target}/{index}")


def worker(name: str, start: int, cases: int, seed: int, slow_ms: float, rss_every: int, log_dir: str,
           progress, results) -> None:
    import faulthandler
    import os
    # OpenCV, libpng and libjpeg complain on stderr about every corrupt image; keep that
    # out of the report, but keep it (and where a crash happened) in a file.
    log = open(Path(log_dir) / f"fuzz-{name}.log", "w")
    os.dup2(log.fileno(), 2)
    faulthandler.enable(log)
    target = all_targets()[name]()[name]
    failures: list[dict] = []
    outcomes = {"ok": 0, "rejected": 0}
    max_ms, max_ms_case = 0.0, start
    warmup = min(1000, cases // 10)
    rss = {"start": None, "samples": []}
    for index in range(start, start + cases):
        progress.value = index
        rng = case_rng(seed, name, index)
        case = target.make_case(rng)
        t0 = time.perf_counter()
        try:
            target.run(case)
            outcomes["ok"] += 1
        except target.allowed:
            outcomes["rejected"] += 1
        except Exception as e:  # noqa: BLE001 - anything else is what we are looking for
            if len(failures) < 20:
                failures.append({"case": index, "error": f"{type(e).__name__}: {e}"[:300],
                                 "where": traceback.format_exc(limit=-3)[-600:]})
            else:
                failures.append({"case": index})
        ms = (time.perf_counter() - t0) * 1000
        if ms > max_ms:
            max_ms, max_ms_case = ms, index
        if ms > slow_ms:
            failures.append({"case": index, "error": f"slow: {ms:.0f} ms (limit {slow_ms:.0f})"})
        done = index - start + 1
        if done == warmup:
            rss["start"] = rss_kb()
        if done > warmup and done % rss_every == 0:
            rss["samples"].append(rss_kb())
    end = rss_kb()
    results.put({"target": name, "cases": cases, **outcomes, "failures": len(failures),
                 "failure_examples": failures[:20], "max_case_ms": round(max_ms, 2), "max_case_index": max_ms_case,
                 "rss_kb_after_warmup": rss["start"] or end, "rss_kb_end": end,
                 "rss_kb_max_sampled": max(rss["samples"] + [end])})


def supervise(name: str, start: int, cases: int, args) -> dict:
    ctx = mp.get_context("spawn")
    progress = ctx.Value("q", start - 1, lock=False)
    results = ctx.Queue()
    proc = ctx.Process(target=worker, args=(name, start, cases, args.seed, args.slow_ms, args.rss_every,
                                            args.log_dir, progress, results), daemon=True)
    t0 = time.monotonic()
    proc.start()
    last, last_change = progress.value, time.monotonic()
    outcome = None
    while outcome is None:
        try:
            outcome = results.get(timeout=1.0)
        except Exception:  # queue.Empty: check on the worker
            if not proc.is_alive():
                proc.join()
                outcome = {"target": name, "cases": progress.value - start + 1, "failures": 1,
                           "failure_examples": [{"case": progress.value,
                                                 "error": f"worker died (exit code {proc.exitcode}), see "
                                                          f"{args.log_dir}/fuzz-{name}.log"}]}
            elif progress.value != last:
                last, last_change = progress.value, time.monotonic()
            elif time.monotonic() - last_change > args.hang_s:
                proc.kill()
                proc.join()
                outcome = {"target": name, "cases": progress.value - start + 1, "failures": 1,
                           "failure_examples": [{"case": progress.value,
                                                 "error": f"hang: no progress for {args.hang_s} s"}]}
    proc.join(30)
    outcome["seconds"] = round(time.monotonic() - t0, 1)
    return outcome


def main() -> int:
    targets = list(all_targets())
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=100_000, help="cases in all, split evenly over the targets")
    ap.add_argument("--targets", default=",".join(targets), help=f"comma-separated subset of {targets}")
    ap.add_argument("--start", type=int, default=0, help="first case index (to replay one case)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--slow-ms", type=float, default=2000.0, help="a case slower than this fails")
    ap.add_argument("--hang-s", type=float, default=60.0, help="no progress for this long: a hang")
    ap.add_argument("--rss-every", type=int, default=1000, help="sample VmRSS every this many cases")
    ap.add_argument("--log-dir", default="/tmp", help="where each worker's stderr goes (fuzz-<target>.log)")
    args = ap.parse_args()
    chosen = [t for t in args.targets.split(",") if t]
    unknown = sorted(set(chosen) - set(targets))
    if unknown:
        ap.error(f"unknown target(s) {unknown}; choose from {targets}")
    per_target, extra = divmod(max(args.cases, len(chosen)), len(chosen))
    t0 = time.monotonic()
    report = {}
    for i, name in enumerate(chosen):
        report[name] = supervise(name, args.start, per_target + (i < extra), args)
        r = report[name]
        print(f"[fuzz] {name}: {r['cases']} cases, {r['failures']} failures, max {r.get('max_case_ms')} ms, "
              f"rss {r.get('rss_kb_after_warmup')} -> {r.get('rss_kb_end')} kB, {r['seconds']} s",
              file=sys.stderr, flush=True)
    summary = {"cases_total": sum(r["cases"] for r in report.values()),
               "failures_total": sum(r["failures"] for r in report.values()),
               "seconds": round(time.monotonic() - t0, 1), "seed": args.seed, "targets": report}
    print(json.dumps(summary))
    return 1 if summary["failures_total"] else 0


if __name__ == "__main__":
    sys.exit(main())
