"""Image sections: OpenCV encoding, and header readers that size an image before decoding.

A compressed image can claim to be 100000 x 100000 in a few dozen bytes. The
readers here take width, height, channel count and bits per sample from the
PNG IHDR chunk or the JPEG frame header (SOF), so the caller can refuse an
image before ``cv2.imdecode`` allocates anything for it.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import NamedTuple

import cv2
import numpy as np

from .errors import WireError


class Codec(IntEnum):
    JPEG = 1
    PNG = 2


class ImageHeader(NamedTuple):
    width: int
    height: int
    channels: int
    bits: int  # per sample


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour type -> samples per pixel. Palette (3) is left out: it decodes to
# colour, and nothing in this protocol is a palette image.
_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}
# Start-of-frame markers of every JPEG process; C4 (DHT), C8 (JPG) and CC (DAC)
# share the range but are not frame headers.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_SOI, _JPEG_EOI, _JPEG_SOS = 0xD8, 0xD9, 0xDA
# Markers without a length field (TEM, RST0-7); they may legally precede SOF.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


def png_header(data: bytes) -> ImageHeader:
    # A PNG must start with the signature and then IHDR (13 bytes of data).
    if len(data) < 33 or not data.startswith(PNG_SIGNATURE):
        raise WireError("PNG: missing signature or IHDR (fewer than 33 bytes or wrong signature)")
    length, chunk = struct.unpack_from(">I4s", data, 8)
    if chunk != b"IHDR" or length != 13:
        raise WireError("PNG: first chunk is not a 13-byte IHDR")
    check_png_chunks(data)
    width, height, bits, colour_type = struct.unpack_from(">IIBB", data, 16)
    if colour_type not in _PNG_CHANNELS:
        raise WireError(f"PNG: unsupported colour type {colour_type}")
    return ImageHeader(width, height, _PNG_CHANNELS[colour_type], bits)


def check_png_chunks(data: bytes) -> None:
    """Every chunk up to IEND must fit in the data. OpenCV's PNG reader spends time in
    proportion to a chunk's declared length: a 300-byte PNG whose IDAT claims 4 GB took
    15 s to be refused (OpenCV 5.0)."""
    pos = len(PNG_SIGNATURE)
    while pos < len(data):
        if len(data) - pos < 12:
            raise WireError(f"PNG: truncated chunk header at byte {pos}")
        length, chunk = struct.unpack_from(">I4s", data, pos)
        if length > len(data) - pos - 12:
            raise WireError(f"PNG: chunk {chunk!r} at byte {pos} declares {length} bytes, "
                            f"only {len(data) - pos - 12} follow")
        pos += 12 + length
        if chunk == b"IEND":
            return


def jpeg_header(data: bytes) -> ImageHeader:
    if not data.startswith(b"\xff\xd8"):
        raise WireError("JPEG: missing start-of-image marker")
    pos = 2
    while True:
        if pos >= len(data) or data[pos] != 0xFF:
            raise WireError(f"JPEG: no marker at byte {pos} before the frame header")
        while pos < len(data) and data[pos] == 0xFF:  # 0xFF fill bytes may pad markers
            pos += 1
        if pos >= len(data):
            raise WireError("JPEG: truncated before the frame header")
        marker = data[pos]
        pos += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (0x00, _JPEG_SOI, _JPEG_EOI, _JPEG_SOS):
            raise WireError(f"JPEG: marker 0x{marker:02X} before the frame header")
        if pos + 2 > len(data):
            raise WireError("JPEG: truncated segment length")
        (length,) = struct.unpack_from(">H", data, pos)
        if length < 2 or pos + length > len(data):
            raise WireError(f"JPEG: segment 0x{marker:02X} of length {length} runs past the data")
        if marker in _JPEG_SOF:
            if length < 8:
                raise WireError("JPEG: frame header too short")
            bits, height, width, channels = struct.unpack_from(">BHHB", data, pos + 2)
            if length != 8 + 3 * channels:
                raise WireError(f"JPEG: frame header length {length} does not fit {channels} components")
            return ImageHeader(width, height, channels, bits)
        pos += length


def read_header(codec: Codec, data: bytes) -> ImageHeader:
    return png_header(data) if codec is Codec.PNG else jpeg_header(data)


def encode(codec: Codec, image: np.ndarray, jpeg_quality: int = 90) -> bytes:
    """Encode an 8-bit BGR or 8/16-bit single-channel image."""
    if codec is Codec.JPEG:
        ext, params = ".jpg", [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]
    else:
        # Encoding runs on the robot's CPU: higher levels took 2-10x longer for
        # under 5% less on noisy depth, the largest section.
        ext, params = ".png", [cv2.IMWRITE_PNG_COMPRESSION, 1]
    ok, buf = cv2.imencode(ext, image, params)
    if not ok:
        raise WireError(f"OpenCV could not encode a {image.shape} {image.dtype} image as {codec.name}")
    return buf.tobytes()


def decode(codec: Codec, data: bytes, header: ImageHeader) -> np.ndarray:
    """Decode an image whose ``header`` the caller has already accepted.

    IMREAD_UNCHANGED keeps 16-bit samples and ignores EXIF orientation, so the
    result must have exactly the header's shape; anything else is refused.
    """
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as e:
        raise WireError(f"{codec.name}: OpenCV could not decode the image ({e.err})") from None
    if image is None:
        raise WireError(f"{codec.name}: corrupt image data")
    expected = (header.height, header.width) + ((header.channels,) if header.channels > 1 else ())
    dtype = np.uint16 if header.bits == 16 else np.uint8
    if image.shape != expected or image.dtype != dtype:
        raise WireError(
            f"{codec.name}: decoded to {image.shape} {image.dtype}, header said {expected} {np.dtype(dtype)}"
        )
    return image
