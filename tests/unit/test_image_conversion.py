"""Tests for seg_edge_node.image_conversion (the project's cv_bridge replacement).

Run from the repository root:
    PYTHONPATH=ros2_ws/src/seg_edge_node .venv/bin/python -m pytest \
        tests/unit/test_image_conversion.py -q
"""

import array
import struct
import time
import types

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from seg_edge_node.image_conversion import (
    MAX_PIXELS,
    ImageConversionError,
    compressed_to_rgb,
    image_to_depth_m,
    image_to_rgb,
    mono8_to_image,
    rgb_to_image,
)

PAD_BYTE = 0xEE  # padding filler: it must never show up in converted pixels

# A 2x3 RGB image with a distinct value in every channel.
RGB = np.array(
    [[[10, 20, 30], [40, 50, 60], [70, 80, 90]],
     [[100, 110, 120], [130, 140, 150], [160, 170, 180]]], dtype=np.uint8)
ALPHA = np.full(RGB.shape[:2] + (1,), 200, dtype=np.uint8)
GREY = np.array([[0, 1, 127], [128, 254, 255]], dtype=np.uint8)


def make_image(encoding, pixels, pad=0, is_bigendian=0):
    """Real sensor_msgs/Image from an (H, W[, C]) array already in the wire dtype/byte order.

    `pad` filler bytes are appended to every row, so step = W * bytes_per_pixel + pad.
    """
    height, width = pixels.shape[:2]
    rows = np.ascontiguousarray(pixels).view(np.uint8).reshape(height, -1)
    padded = np.hstack([rows, np.full((height, pad), PAD_BYTE, dtype=np.uint8)])
    return Image(height=height, width=width, encoding=encoding, is_bigendian=is_bigendian,
                 step=padded.shape[1], data=padded.tobytes())  # rclpy stores array.array('B')


def make_header(sec=1712345678, nanosec=123456789, frame_id="camera_color_optical_frame"):
    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)


def assert_rgb_result(out, height, width):
    assert out.dtype == np.uint8
    assert out.shape == (height, width, 3)
    assert out.flags.c_contiguous


# --- image_to_rgb ---------------------------------------------------------------------


@pytest.mark.parametrize("pad", [0, 1, 5])
@pytest.mark.parametrize("encoding, wire", [
    ("rgb8", RGB),
    ("bgr8", RGB[..., ::-1]),
    ("rgba8", np.concatenate([RGB, ALPHA], axis=2)),
    ("bgra8", np.concatenate([RGB[..., ::-1], ALPHA], axis=2)),
])
def test_colour_encodings_give_rgb_channel_order_without_alpha(encoding, wire, pad):
    out = image_to_rgb(make_image(encoding, wire, pad=pad))
    assert_rgb_result(out, 2, 3)
    np.testing.assert_array_equal(out, RGB)


@pytest.mark.parametrize("pad", [0, 3])
def test_mono8_is_replicated_to_three_channels(pad):
    out = image_to_rgb(make_image("mono8", GREY, pad=pad))
    assert_rgb_result(out, 2, 3)
    np.testing.assert_array_equal(out, np.repeat(GREY[..., None], 3, axis=2))


@pytest.mark.parametrize("encoding", ["mono16", "16UC1"])
@pytest.mark.parametrize("byte_order, is_bigendian", [("<u2", 0), (">u2", 1)])
@pytest.mark.parametrize("pad", [0, 2, 6])
def test_16bit_grey_shows_the_high_byte(encoding, byte_order, is_bigendian, pad):
    values = np.array([[0, 255, 256], [0x1234, 0xFF00, 0xFFFF]])
    out = image_to_rgb(make_image(encoding, values.astype(byte_order), pad=pad,
                                  is_bigendian=is_bigendian))
    assert_rgb_result(out, 2, 3)
    expected = np.array([[0, 0, 1], [0x12, 0xFF, 0xFF]], dtype=np.uint8)
    np.testing.assert_array_equal(out, np.repeat(expected[..., None], 3, axis=2))


def test_big_endian_flag_is_ignored_for_8bit_data():
    np.testing.assert_array_equal(image_to_rgb(make_image("rgb8", RGB, is_bigendian=1)), RGB)


@pytest.mark.parametrize("data_type", [bytes, bytearray, list])
def test_duck_typed_message_data_may_be_bytes_or_list(data_type):
    msg = make_image("bgr8", RGB[..., ::-1], pad=2)
    duck = types.SimpleNamespace(height=msg.height, width=msg.width, encoding=msg.encoding,
                                 is_bigendian=0, step=msg.step, data=data_type(msg.data))
    np.testing.assert_array_equal(image_to_rgb(duck), RGB)


@pytest.mark.parametrize("encoding, wire", [("rgb8", RGB), ("bgr8", RGB[..., ::-1])])
def test_result_is_a_writable_copy_not_a_view_of_the_message(encoding, wire):
    msg = make_image(encoding, wire)
    before = bytes(msg.data)
    out = image_to_rgb(msg)
    out[:] = 0  # raises if read-only
    assert bytes(msg.data) == before


# --- image_to_depth_m ------------------------------------------------------------------


MM = np.array([[0, 1, 999], [1000, 1500, 65535]])
METRES = np.array([[0.0, 0.001, 0.999], [1.0, 1.5, 65.535]], dtype=np.float32)


@pytest.mark.parametrize("encoding", ["16UC1", "mono16"])
@pytest.mark.parametrize("byte_order, is_bigendian", [("<u2", 0), (">u2", 1)])
@pytest.mark.parametrize("pad", [0, 4])
def test_16bit_depth_is_millimetres(encoding, byte_order, is_bigendian, pad):
    out = image_to_depth_m(make_image(encoding, MM.astype(byte_order), pad=pad,
                                      is_bigendian=is_bigendian))
    assert out.dtype == np.float32 and out.shape == (2, 3) and out.flags.c_contiguous
    # Exact: each value is the float32 nearest to the true metre value; 0 (no return) stays 0.
    np.testing.assert_array_equal(out, METRES)
    assert out[0, 0] == 0.0


@pytest.mark.parametrize("byte_order, is_bigendian", [("<f4", 0), (">f4", 1)])
@pytest.mark.parametrize("pad", [0, 4, 12])
def test_32fc1_depth_is_metres_and_invalid_values_pass_through(byte_order, is_bigendian, pad):
    values = np.array([[0.5, np.nan, 2.25], [np.inf, -np.inf, 0.0]])
    out = image_to_depth_m(make_image("32FC1", values.astype(byte_order), pad=pad,
                                      is_bigendian=is_bigendian))
    assert out.dtype == np.float32 and out.shape == (2, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, values.astype(np.float32))  # NaN == NaN here


def test_depth_result_is_a_writable_copy():
    msg = make_image("32FC1", np.ones((2, 2), "<f4"))
    before = bytes(msg.data)
    image_to_depth_m(msg)[:] = 7
    assert bytes(msg.data) == before


# --- compressed_to_rgb -----------------------------------------------------------------


def smooth_rgb(height=48, width=64):
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // (width - 1), y * 255 // (height - 1),
                     np.full_like(x, 90)], axis=2).astype(np.uint8)


def compressed(rgb, ext, fmt):
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return CompressedImage(header=make_header(), format=fmt, data=buf.tobytes())


@pytest.mark.parametrize("fmt", ["png", "rgb8; png compressed bgr8"])
def test_png_round_trip_is_exact(fmt):
    rgb = smooth_rgb()
    out = compressed_to_rgb(compressed(rgb, ".png", fmt))
    assert_rgb_result(out, *rgb.shape[:2])
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("fmt", ["jpeg", "rgb8; jpeg compressed bgr8", ""])
def test_jpeg_round_trip_is_close(fmt):
    rgb = smooth_rgb()
    out = compressed_to_rgb(compressed(rgb, ".jpg", fmt))
    assert_rgb_result(out, *rgb.shape[:2])
    error = np.abs(out.astype(int) - rgb)
    assert error.mean() < 2 and error.max() < 20


def test_jpeg_keeps_red_red():
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 255
    out = compressed_to_rgb(compressed(red, ".jpg", "jpeg"))
    assert out[..., 0].min() > 240 and out[..., 1:].max() < 15


def test_grey_png_decodes_to_three_channels():
    ok, buf = cv2.imencode(".png", GREY)
    out = compressed_to_rgb(CompressedImage(format="png", data=buf.tobytes()))
    np.testing.assert_array_equal(out, np.repeat(GREY[..., None], 3, axis=2))


@pytest.mark.parametrize("data, fmt, message", [
    (b"", "jpeg", "CompressedImage.data is empty"),
    (b"this is not an image", "jpeg", "could not decode 20 bytes"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 30, "png", "as JPEG or PNG"),
    (b"\x00" * 12 + b"\x89PNG", "16UC1; compressedDepth png", "compressed depth"),
])
def test_bad_compressed_image_raises(data, fmt, message):
    with pytest.raises(ImageConversionError, match=message):
        compressed_to_rgb(CompressedImage(format=fmt, data=data))


def with_declared_size(data: bytes, width: int, height: int) -> bytes:
    """The same compressed image with its PNG IHDR or JPEG SOF0 claiming another size."""
    out = bytearray(data)
    if out.startswith(b"\x89PNG"):
        struct.pack_into(">II", out, 16, width, height)  # a decoder that checks the CRC refuses it too
    else:
        struct.pack_into(">HH", out, out.index(b"\xff\xc0") + 5, height, width)
    return bytes(out)


@pytest.mark.parametrize("ext", [".jpg", ".png"])
@pytest.mark.parametrize("width, height", [(20000, 20000), (65535, 1025), (0, 8), (8, 0)])  # 65535 * 1025 > MAX_PIXELS
def test_declared_size_is_checked_before_decoding(ext, width, height):
    # Regression (found while writing bench/fuzz.py): a 600-byte JPEG declaring 20000x20000 made
    # OpenCV allocate and fill 2.5 GB, taking seconds, before the missing data showed.
    data = with_declared_size(compressed(smooth_rgb(8, 8), ext, "x").data.tobytes(), width, height)
    start = time.perf_counter()
    with pytest.raises(ImageConversionError, match=f"declares {width}x{height} pixels"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=data))
    assert time.perf_counter() - start < 0.5


def test_png_chunk_longer_than_the_data_is_refused_quickly():
    # Regression (found by bench/fuzz.py): OpenCV spent seconds on a PNG whose IDAT declared 4 GB.
    data = bytearray(compressed(smooth_rgb(8, 8), ".png", "png").data.tobytes())
    struct.pack_into(">I", data, 33, 2**32 - 1)
    start = time.perf_counter()
    with pytest.raises(ImageConversionError, match="declares 4294967295 bytes"):
        compressed_to_rgb(CompressedImage(format="png", data=bytes(data)))
    assert time.perf_counter() - start < 0.5


def test_only_jpeg_and_png_are_decoded():
    bmp = cv2.imencode(".bmp", smooth_rgb(8, 8))[1].tobytes()
    with pytest.raises(ImageConversionError, match="neither the JPEG nor the PNG signature"):
        compressed_to_rgb(CompressedImage(format="bmp", data=bmp))
    truncated = compressed(smooth_rgb(8, 8), ".jpg", "jpeg").data.tobytes()[:40]
    with pytest.raises(ImageConversionError, match="as JPEG or PNG"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=truncated))


# --- bad raw images ----------------------------------------------------------------------


class UntouchableData:
    """Duck-typed Image whose data must not be read: header checks have to come first."""

    def __init__(self, **fields):
        self.__dict__.update(dict(height=2, width=3, encoding="rgb8", is_bigendian=0, step=9))
        self.__dict__.update(fields)

    @property
    def data(self):
        raise AssertionError("converter read data before validating the header")


@pytest.mark.parametrize("convert, fields, message", [
    (image_to_rgb, dict(encoding="yuv422"),
     r"encoding 'yuv422' cannot be read as an RGB image; supported: rgb8, bgr8, rgba8, bgra8, "
     r"mono8, mono16, 16UC1"),
    (image_to_rgb, dict(encoding="32FC1", step=12), "'32FC1' cannot be read as an RGB image"),
    (image_to_depth_m, dict(encoding="rgb8"),
     "'rgb8' cannot be read as depth; supported: mono16, 16UC1, 32FC1"),
    (image_to_rgb, dict(encoding=None), "encoding None cannot be read"),
    (image_to_rgb, dict(width=0), r"no pixels \(height=2, width=0\)"),
    (image_to_rgb, dict(height=0), r"no pixels \(height=0, width=3\)"),
    (image_to_depth_m, dict(encoding="16UC1", height=-1), "no pixels"),
    (image_to_rgb, dict(height=8193, width=8192, step=8192 * 3), "pixel limit"),
    (image_to_rgb, dict(height=100_000, width=100_000, step=300_000),
     "header is probably corrupt"),
    (image_to_rgb, dict(step=8), r"step 8 is less than width\*bytes_per_pixel = 3\*3 = 9"),
    (image_to_rgb, dict(encoding="bgra8", step=11), r"3\*4 = 12 for bgra8"),
    (image_to_depth_m, dict(encoding="16UC1", step=7), "step 7 is not a multiple of 2"),
    (image_to_depth_m, dict(encoding="32FC1", step=14), "step 14 is not a multiple of 4"),
    (image_to_rgb, dict(height="2"), "height, width and step must be integers"),
    (image_to_rgb, dict(step=9.0), "must be integers"),
])
def test_bad_header_raises_before_reading_data(convert, fields, message):
    with pytest.raises(ImageConversionError, match=message):
        convert(UntouchableData(**fields))


def test_size_limit_allows_the_largest_image():
    msg = UntouchableData(encoding="mono8", height=MAX_PIXELS // 8192, width=8192, step=8192)
    with pytest.raises(AssertionError, match="read data"):  # got past every header check
        image_to_rgb(msg)


@pytest.mark.parametrize("convert, msg, message", [
    (image_to_rgb, Image(height=2, width=3, encoding="rgb8", step=9, data=b"\x00" * 17),
     r"data has 17 bytes, expected step\*height = 9\*2 = 18 for a 3x2 rgb8 image"),
    # A padded last row counts: ROS says len(data) == step * height.
    (image_to_depth_m, Image(height=2, width=1, encoding="16UC1", step=4, data=b"\x00" * 6),
     "data has 6 bytes, expected step\\*height = 4\\*2 = 8"),
    (image_to_rgb, types.SimpleNamespace(height=1, width=1, encoding="mono8", is_bigendian=0,
                                         step=1, data="x"),
     "Image.data must be bytes, array.array\\('B'\\) or a list of 0..255 ints, got str"),
    (image_to_rgb, types.SimpleNamespace(height=1, width=2, encoding="mono8", is_bigendian=0,
                                         step=2, data=[1, 300]),
     "list of 0..255 ints"),
    (image_to_rgb, types.SimpleNamespace(height=1, width=1, encoding="mono8", is_bigendian=0,
                                         step=1, data=None),
     "got NoneType"),
])
def test_bad_data_raises(convert, msg, message):
    with pytest.raises(ImageConversionError, match=message):
        convert(msg)


def test_errors_are_value_errors():
    assert issubclass(ImageConversionError, ValueError)


# --- rgb_to_image / mono8_to_image --------------------------------------------------------


def test_rgb_to_image_round_trip_and_header_copy():
    header = make_header()
    msg = rgb_to_image(RGB, header)
    assert isinstance(msg, Image)
    assert (msg.height, msg.width, msg.encoding, msg.step) == (2, 3, "rgb8", 9)
    assert msg.is_bigendian == 0
    assert isinstance(msg.data, array.array) and msg.data.typecode == "B"
    assert bytes(msg.data) == RGB.tobytes()
    np.testing.assert_array_equal(image_to_rgb(msg), RGB)
    assert msg.header == header
    header.frame_id, header.stamp.sec = "changed", 5  # the message has its own copy
    assert msg.header.frame_id == "camera_color_optical_frame"
    assert msg.header.stamp.sec == 1712345678
    assert msg.header.stamp.nanosec == 123456789


def test_rgb_to_image_accepts_non_contiguous_arrays():
    wide = np.concatenate([RGB, RGB], axis=1)[:, ::2]  # strided view
    np.testing.assert_array_equal(image_to_rgb(rgb_to_image(wide, make_header())), wide)


def test_mono8_to_image_round_trip_and_header_copy():
    header = make_header(sec=3, nanosec=4, frame_id="base_link")
    msg = mono8_to_image(GREY, header)
    assert (msg.height, msg.width, msg.encoding, msg.step) == (2, 3, "mono8", 3)
    assert msg.is_bigendian == 0
    mono = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)
    np.testing.assert_array_equal(mono, GREY)
    np.testing.assert_array_equal(image_to_rgb(msg), np.repeat(GREY[..., None], 3, axis=2))
    assert msg.header == header and msg.header is not header


def test_published_images_survive_rclpy_serialization():
    from rclpy.serialization import deserialize_message, serialize_message

    msg = rgb_to_image(RGB, make_header())
    back = deserialize_message(serialize_message(msg), Image)
    np.testing.assert_array_equal(image_to_rgb(back), RGB)
    assert back.header == msg.header


@pytest.mark.parametrize("bad", [
    RGB.astype(np.float32), RGB[..., :2], RGB[..., 0], np.zeros((0, 3, 3), np.uint8),
])
def test_rgb_to_image_rejects_wrong_arrays(bad):
    with pytest.raises(ImageConversionError, match=r"needs a non-empty \(H, W, 3\) uint8 array"):
        rgb_to_image(bad, make_header())


@pytest.mark.parametrize("bad", [GREY.astype(np.int64), RGB, np.zeros((2, 0), np.uint8)])
def test_mono8_to_image_rejects_wrong_arrays(bad):
    with pytest.raises(ImageConversionError, match=r"needs a non-empty \(H, W\) uint8 array"):
        mono8_to_image(bad, make_header())


# --- fuzz ------------------------------------------------------------------------------------

ENCODINGS = ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "16UC1", "32FC1"]
BYTES_PER_PIXEL = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "mono16": 2,
                   "16UC1": 2, "32FC1": 4}


@st.composite
def raw_images(draw):
    encoding = draw(st.sampled_from(ENCODINGS + ["yuv422", "", "RGB8", "8UC3"]))
    height = draw(st.integers(-1, 6))
    width = draw(st.integers(-1, 6))
    if draw(st.booleans()):  # mostly consistent headers, so conversions also succeed
        # Padding in whole 4-byte units keeps 16/32-bit steps aligned; odd pads test the check.
        pad = draw(st.one_of(st.integers(0, 3).map(lambda k: 4 * k), st.integers(-3, 9)))
        step = width * BYTES_PER_PIXEL.get(encoding, 3) + pad
        size = max(0, step * height + draw(st.integers(-2, 6)))
        data = draw(st.binary(min_size=size, max_size=size))
    else:
        step = draw(st.integers(-2, 60))
        data = draw(st.binary(max_size=300))
    return Image(check_fields=False, height=height, width=width, encoding=encoding,
                 is_bigendian=draw(st.sampled_from([0, 1, 255])), step=step, data=data)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw_images())
def test_fuzz_raw_images(msg):
    try:
        rgb = image_to_rgb(msg)
    except ImageConversionError:
        pass
    else:
        assert_rgb_result(rgb, msg.height, msg.width)
    try:
        depth = image_to_depth_m(msg)
    except ImageConversionError:
        pass
    else:
        assert depth.dtype == np.float32 and depth.shape == (msg.height, msg.width)


_PNG = cv2.imencode(".png", smooth_rgb(8, 8))[1].tobytes()
_JPEG = cv2.imencode(".jpg", smooth_rgb(8, 8))[1].tobytes()


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200),
                 st.sampled_from([_PNG, _JPEG]).flatmap(
                     lambda b: st.integers(0, len(b)).map(lambda n: b[:n])),
                 st.sampled_from([_PNG, _JPEG]).flatmap(
                     lambda b: st.binary(min_size=1, max_size=8).map(lambda junk: junk + b[8:]))))
def test_fuzz_compressed(data):
    try:
        rgb = compressed_to_rgb(CompressedImage(format="jpeg", data=data))
    except ImageConversionError:
        return
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert rgb.flags.c_contiguous


# --- speed guard -------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding, convert", [
    ("rgb8", image_to_rgb), ("bgr8", image_to_rgb), ("16UC1", image_to_depth_m),
])
def test_vga_frame_converts_without_python_pixel_loops(encoding, convert):
    # Generous bound (measured well under 1 ms): only catches a per-pixel Python loop.
    pixels = np.zeros((480, 640, BYTES_PER_PIXEL[encoding]), np.uint8)
    msg = make_image(encoding, pixels)
    times = []
    for _ in range(20):
        start = time.perf_counter()
        convert(msg)
        times.append(time.perf_counter() - start)
    assert sorted(times)[len(times) // 2] < 0.01
