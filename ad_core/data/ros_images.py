"""sensor_msgs images <-> numpy without ROS or cv_bridge: the node's camera path and ``ad-core data from-bag``.

A serialized ``sensor_msgs/Image`` or ``CompressedImage`` (the bytes of a raw ROS 2 subscription, or
of a rosbag2 record) is read in place (:func:`parse_image`, :func:`parse_compressed`) and turned into
RGB uint8 (:func:`image_to_rgb`, :func:`compressed_to_rgb`) in every encoding the node accepts.
Nothing here imports ROS: a bag is imported on a PC without a ROS installation. Every function
raises :class:`MalformedImage` with a sentence naming the field at fault, so the caller can log
it, count it and go on.
"""

from __future__ import annotations

import io
import struct
from types import SimpleNamespace

import numpy as np

from ad_core.data.images import to_uint8

CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "8UC1": 1, "8UC3": 3}
WIDE = {"mono16": 1, "16UC1": 1, "rgb16": 3, "bgr16": 3}
BAYER = ("bayer_rggb8", "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8")
YUV = {"yuv422": "uyvy", "uyvy": "uyvy", "yuv422_yuy2": "yuyv", "yuyv": "yuyv"}
SUPPORTED = (*CHANNELS, *WIDE, *BAYER, *YUV)


class MalformedImage(ValueError):
    """The message cannot be turned into an RGB image; the text says why."""


class _Cdr:
    """Reads the plain CDR of a serialized ROS 2 message (XCDR1 or XCDR2, either byte order)."""

    def __init__(self, raw) -> None:
        self.buf = memoryview(raw).cast("B")
        if len(self.buf) < 4:
            raise MalformedImage(f"serialized message of {len(self.buf)} bytes: too short for a CDR header")
        kind = self.buf[1]  # representation id, big endian: 0/1 CDR, 6/7 plain CDR2 (even: big endian)
        if self.buf[0] != 0 or kind not in (0, 1, 6, 7):
            raise MalformedImage(f"serialized message with representation {bytes(self.buf[:2]).hex()}: not plain CDR")
        self.order = "<" if kind % 2 else ">"
        self.pos = 4  # alignment counts from the end of the 4-byte encapsulation header

    def _take(self, n: int, align: int) -> memoryview:
        self.pos += -(self.pos - 4) % align
        if self.pos + n > len(self.buf):
            raise MalformedImage(f"serialized message ends at byte {len(self.buf)}, a field needs {self.pos + n}")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def u32(self) -> int:
        return struct.unpack(self.order + "I", self._take(4, 4))[0]

    def i32(self) -> int:
        return struct.unpack(self.order + "i", self._take(4, 4))[0]

    def u8(self) -> int:
        return self._take(1, 1)[0]

    def string(self) -> str:
        n = self.u32()
        return bytes(self._take(n, 1)).rstrip(b"\0").decode("utf-8", "replace")

    def octets(self) -> memoryview:
        return self._take(self.u32(), 1)

    def header(self) -> SimpleNamespace:
        stamp = SimpleNamespace(sec=self.i32(), nanosec=self.u32())
        return SimpleNamespace(stamp=stamp, frame_id=self.string())


def parse_image(raw) -> SimpleNamespace:
    """A serialized ``sensor_msgs/Image`` (a raw subscription's bytes) with the message's fields.

    ``data`` is a view into ``raw``, not a copy; ``header`` has ``stamp.sec``, ``stamp.nanosec`` and
    ``frame_id``. Reading the bytes directly skips rclpy's conversion of the pixels into a Python
    message, which costs a copy of every frame.
    """
    cdr = _Cdr(raw)
    header = cdr.header()
    height, width, encoding = cdr.u32(), cdr.u32(), cdr.string()
    is_bigendian, step = cdr.u8(), cdr.u32()
    return SimpleNamespace(
        header=header, height=height, width=width, encoding=encoding, is_bigendian=is_bigendian, step=step,
        data=cdr.octets(),
    )  # fmt: skip


def parse_compressed(raw) -> SimpleNamespace:
    """A serialized ``sensor_msgs/CompressedImage`` with ``header``, ``format`` and ``data`` (a view)."""
    cdr = _Cdr(raw)
    header = cdr.header()
    return SimpleNamespace(header=header, format=cdr.string(), data=cdr.octets())


def _rows(msg, bytes_per_pixel: float) -> np.ndarray:
    """The message's pixel rows as a ``(height, width * bytes_per_pixel)`` uint8 array (step checked)."""
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise MalformedImage(f"height {h} x width {w}: an image needs both above 0")
    row = round(w * bytes_per_pixel)
    if step < row:
        raise MalformedImage(f"step {step} is shorter than a row of {w} pixels in {msg.encoding} ({row} bytes)")
    data = np.frombuffer(msg.data, np.uint8)  # no copy: rclpy hands over an array('B') / bytes
    if data.size < step * (h - 1) + row:
        raise MalformedImage(f"data holds {data.size} bytes; {h} rows of step {step} need {step * (h - 1) + row}")
    if data.size >= step * h:
        return data[: step * h].reshape(h, step)[:, :row]
    padded = np.zeros(step * h, np.uint8)  # the last row may omit its padding
    padded[: data.size] = data
    return padded.reshape(h, step)[:, :row]


def image_to_rgb(msg) -> np.ndarray:
    """A ``sensor_msgs/Image`` as ``(H, W, 3)`` RGB uint8."""
    enc = str(msg.encoding)
    h, w = int(msg.height), int(msg.width)
    if enc in CHANNELS:
        c = CHANNELS[enc]
        arr = _rows(msg, c).reshape(h, w, c)
        if c == 1:
            return np.repeat(arr, 3, axis=2)
        arr = arr[:, :, :3]
        return np.ascontiguousarray(arr[:, :, ::-1] if enc.startswith("bgr") else arr)
    if enc in WIDE:
        c = WIDE[enc]
        raw = _rows(msg, 2 * c)
        arr = raw.copy().view(">u2" if msg.is_bigendian else "<u2").reshape(h, w, c).astype(np.uint16)
        arr = to_uint8(arr)
        if c == 1:
            return np.repeat(arr, 3, axis=2)
        return np.ascontiguousarray(arr[:, :, ::-1] if enc.startswith("bgr") else arr)
    if enc in BAYER:
        return _demosaic(_rows(msg, 1).reshape(h, w), enc)
    if enc in YUV:
        if w % 2:
            raise MalformedImage(f"{enc} needs an even width, got {w}")
        return _yuv422(_rows(msg, 2).reshape(h, w // 2, 4), YUV[enc])
    raise MalformedImage(f"unsupported encoding {enc!r}; supported: {', '.join(SUPPORTED)}")


def compressed_to_rgb(msg) -> np.ndarray:
    """A ``sensor_msgs/CompressedImage`` (JPEG, PNG, ...) as ``(H, W, 3)`` RGB uint8."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(bytes(msg.data))) as img:
            img.load()
            arr = np.asarray(img.convert("RGB") if img.mode not in ("I;16", "I") else img)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise MalformedImage(
            f"compressed image ({msg.format!r}, {len(msg.data)} bytes) cannot be decoded: {exc}"
        ) from exc
    arr = to_uint8(arr)
    return np.repeat(arr[:, :, None], 3, axis=2) if arr.ndim == 2 else arr


def _demosaic(raw: np.ndarray, enc: str) -> np.ndarray:
    """Bilinear-free demosaic: each 2x2 cell gives one RGB value, repeated over the cell."""
    h, w = raw.shape
    if h % 2 or w % 2:
        raise MalformedImage(f"{enc} needs even height and width, got {h} x {w}")
    pattern = enc.split("_")[1][:4].upper()  # e.g. RGGB
    cell = {pattern[0]: raw[0::2, 0::2], pattern[3]: raw[1::2, 1::2]}
    g = (raw[0::2, 1::2].astype(np.uint16) + raw[1::2, 0::2]) // 2
    rgb = np.stack([cell["R"], g.astype(np.uint8), cell["B"]], axis=2)
    return np.ascontiguousarray(rgb.repeat(2, axis=0).repeat(2, axis=1))


def _yuv422(quads: np.ndarray, order: str) -> np.ndarray:
    """UYVY / YUYV to RGB (BT.601, studio range) at full width."""
    q = quads.astype(np.float32)
    if order == "uyvy":
        u, y0, v, y1 = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    else:
        y0, u, y1, v = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    y = np.stack([y0, y1], axis=2).reshape(q.shape[0], -1)
    u = np.repeat(u, 2, axis=1) - 128.0
    v = np.repeat(v, 2, axis=1) - 128.0
    c = 1.164 * (y - 16.0)
    rgb = np.stack([c + 1.596 * v, c - 0.392 * u - 0.813 * v, c + 2.017 * u], axis=2)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def rgb_to_image(rgb: np.ndarray, header, image_cls):
    """An ``rgb8`` ``sensor_msgs/Image`` carrying ``header``."""
    msg = image_cls()
    msg.header = header
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding, msg.is_bigendian, msg.step = "rgb8", 0, int(rgb.shape[1]) * 3
    msg.data = np.ascontiguousarray(rgb, np.uint8).tobytes()
    return msg


def float_to_image(arr: np.ndarray, header, image_cls):
    """A ``32FC1`` ``sensor_msgs/Image`` (little endian) carrying ``header``."""
    msg = image_cls()
    msg.header = header
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding, msg.is_bigendian, msg.step = "32FC1", 0, int(arr.shape[1]) * 4
    msg.data = np.ascontiguousarray(arr, "<f4").tobytes()
    return msg
