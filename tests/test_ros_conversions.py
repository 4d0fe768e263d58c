"""sensor_msgs image encodings to RGB, without cv_bridge: every supported encoding and the refusals."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from ad_core.data.ros_images import MalformedImage, compressed_to_rgb, image_to_rgb


def msg(arr: np.ndarray, encoding: str, step: int | None = None, bigendian: bool = False):
    h, w = arr.shape[:2]
    data = np.ascontiguousarray(arr).tobytes()
    return SimpleNamespace(
        height=h, width=w, encoding=encoding, is_bigendian=int(bigendian), step=step or len(data) // h, data=data
    )


RGB = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)


def test_rgb_bgr_mono_and_padded_rows():
    assert (image_to_rgb(msg(RGB, "rgb8")) == RGB).all()
    assert (image_to_rgb(msg(RGB[:, :, ::-1], "bgr8")) == RGB).all()
    rgba = np.concatenate([RGB, np.full((6, 8, 1), 7, np.uint8)], axis=2)
    assert (image_to_rgb(msg(rgba, "rgba8")) == RGB).all()
    padded = np.zeros((6, 8 * 3 + 8), np.uint8)
    padded[:, :24] = RGB.reshape(6, 24)
    assert (image_to_rgb(_with_width(padded, 8)) == RGB).all()  # step 32 > 24 bytes per row
    grey = RGB[:, :, 0]
    assert (image_to_rgb(msg(grey, "mono8")) == grey[:, :, None]).all()


def _with_width(padded: np.ndarray, width: int):
    m = msg(padded, "rgb8", step=padded.shape[1])
    m.width = width
    return m


def test_sixteen_bit_both_endians_scale_like_files():
    wide = (np.arange(48, dtype=np.uint16) * 1365).reshape(6, 8)
    little = image_to_rgb(msg(wide.astype("<u2"), "mono16"))
    big = image_to_rgb(msg(wide.astype(">u2"), "mono16", bigendian=True))
    expected = (wide.astype(np.float64) * 255 / 65535 + 0.5).astype(np.uint8)
    assert (little[:, :, 0] == expected).all() and (big == little).all()


def test_bayer_and_yuv():
    raw = np.zeros((4, 4), np.uint8)
    raw[0::2, 0::2], raw[0::2, 1::2], raw[1::2, 0::2], raw[1::2, 1::2] = 200, 100, 100, 50  # R G / G B
    rgb = image_to_rgb(msg(raw, "bayer_rggb8"))
    assert rgb.shape == (4, 4, 3) and (rgb[0, 0] == [200, 100, 50]).all()
    grey = np.full((2, 4, 2), 128, np.uint8)  # U=V=128: no colour
    grey[..., 1] = 126  # Y in UYVY (U Y V Y)
    m = msg(grey.reshape(2, 8), "uyvy", step=8)
    m.width = 4  # two pixels per 4-byte U Y V Y group
    out = image_to_rgb(m)
    assert out.shape == (2, 4, 3) and np.ptp(out) <= 1 and abs(int(out[0, 0, 0]) - 128) <= 1


def test_compressed_png_and_jpeg():
    ramp = np.linspace(0, 255, 32 * 48 * 3).reshape(32, 48, 3).astype(np.uint8)  # smooth: JPEG keeps it
    for fmt in ("PNG", "JPEG"):
        buf = io.BytesIO()
        Image.fromarray(ramp).save(buf, format=fmt, quality=100)
        out = compressed_to_rgb(SimpleNamespace(format=fmt.lower(), data=buf.getvalue()))
        assert out.shape == ramp.shape
        assert np.abs(out.astype(int) - ramp).mean() < (0.01 if fmt == "PNG" else 3)
    with pytest.raises(MalformedImage, match="cannot be decoded"):
        compressed_to_rgb(SimpleNamespace(format="jpeg", data=b"not a jpeg"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"step": 5}, "step 5 is shorter than a row"),
        ({"data": b"\x00" * 10}, "data holds 10 bytes"),
        ({"encoding": "32FC1"}, "unsupported encoding '32FC1'"),
        ({"height": 0}, "an image needs both above 0"),
    ],
)
def test_malformed_messages_are_refused_with_the_field_named(change, message):
    m = msg(RGB, "rgb8")
    for k, v in change.items():
        setattr(m, k, v)
    with pytest.raises(MalformedImage, match=message):
        image_to_rgb(m)


@pytest.mark.parametrize("frame_id", ["", "c", "cam", "camera_7", "a_longer_frame_id_0123"])  # every alignment
def test_serialized_frames_are_read_in_place_like_rclpy_reads_them(frame_id):
    serialization = pytest.importorskip("rclpy.serialization", reason="rclpy is not installed")
    from sensor_msgs.msg import CompressedImage
    from sensor_msgs.msg import Image as ImageMsg

    from ad_core.data.ros_images import parse_compressed, parse_image

    rng = np.random.default_rng(len(frame_id))
    for encoding, arr in (("rgb8", RGB), ("mono16", rng.integers(0, 65535, (5, 7), dtype=np.uint16))):
        m = ImageMsg()
        m.header.frame_id, m.header.stamp.sec, m.header.stamp.nanosec = frame_id, 1_764_633_600, 999_999_999
        m.height, m.width, m.encoding, m.is_bigendian = arr.shape[0], arr.shape[1], encoding, 0
        m.step, m.data = arr.nbytes // arr.shape[0], arr.tobytes()
        raw = serialization.serialize_message(m)
        got = parse_image(raw)
        assert (got.header.frame_id, got.header.stamp.sec, got.header.stamp.nanosec) == (
            frame_id,
            1_764_633_600,
            999_999_999,
        )
        assert (got.height, got.width, got.encoding, got.is_bigendian, got.step) == (
            m.height, m.width, m.encoding, 0, m.step
        )  # fmt: skip
        assert bytes(got.data) == arr.tobytes()
        np.testing.assert_array_equal(image_to_rgb(got), image_to_rgb(serialization.deserialize_message(raw, ImageMsg)))
    c = CompressedImage()
    c.header.frame_id, c.format, c.data = frame_id, "jpeg", bytes(range(200))
    got = parse_compressed(serialization.serialize_message(c))
    assert (got.header.frame_id, got.format, bytes(got.data)) == (frame_id, "jpeg", bytes(range(200)))


def test_big_endian_cdr_and_truncated_bytes():
    import struct

    from ad_core.data.ros_images import parse_image

    def s(text):
        b = text.encode() + b"\0"
        return struct.pack(">I", len(b)) + b

    body = struct.pack(">iI", 3, 4) + s("cam")  # header: stamp, frame_id (8 bytes: aligned)
    body += struct.pack(">II", 2, 3) + s("rgb8") + b"\x01" + b"\0" * 2 + struct.pack(">I", 9)
    body += struct.pack(">I", 18) + bytes(range(18))
    got = parse_image(b"\x00\x00\x00\x00" + body)  # representation 0x0000: CDR, big endian
    assert (got.header.stamp.sec, got.header.frame_id, got.height, got.width, got.encoding) == (3, "cam", 2, 3, "rgb8")
    assert (got.is_bigendian, got.step, bytes(got.data)) == (1, 9, bytes(range(18)))
    with pytest.raises(MalformedImage, match="serialized message ends at byte"):
        parse_image(b"\x00\x00\x00\x00" + body[:-5])
    with pytest.raises(MalformedImage, match="not plain CDR"):
        parse_image(b"\x00\x0a\x00\x00" + body)
