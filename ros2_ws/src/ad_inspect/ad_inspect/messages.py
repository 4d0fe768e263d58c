"""The node's outgoing messages, built from an :class:`ad_core.inspector.Inspection` and the frame's header."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, Vector3Stamped
from std_msgs.msg import Bool, Float32, Header, String
from visualization_msgs.msg import Marker, MarkerArray


def copy_header(header) -> Header:
    """The input frame's header (stamp and frame_id) for every output: consumers match by stamp."""
    out = Header(frame_id=header.frame_id)
    out.stamp.sec, out.stamp.nanosec = header.stamp.sec, header.stamp.nanosec
    return out


def result_messages(result, header: Header) -> tuple[Float32, Float32, Bool, Vector3Stamped]:
    """``/score``, ``/raw_score``, ``/decision`` and the stamped ``/result`` (x score, y raw score, z decision)."""
    stamped = Vector3Stamped(header=header)
    stamped.vector.x, stamped.vector.y, stamped.vector.z = result.score, result.raw_score, float(result.is_anomaly)
    return Float32(data=result.score), Float32(data=result.raw_score), Bool(data=result.is_anomaly), stamped


def diagnostics(values: dict[str, Any], error: str, hardware_id: str, stamp) -> DiagnosticArray:
    """One ``ad_inspect: inference`` status: OK, or WARN with the last error; ``values`` as key-value pairs."""
    status = DiagnosticStatus(
        level=DiagnosticStatus.OK if not error else DiagnosticStatus.WARN,
        name="ad_inspect: inference",
        message=error or "ok",
        hardware_id=hardware_id,
    )
    status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
    arr = DiagnosticArray(status=[status])
    arr.header.stamp = stamp
    return arr


def mask_message(mask: np.ndarray, header: Header, image_cls):
    """The defect mask as ``mono8`` (255 where the map is at or above the pixel threshold), the frame's header."""
    msg = image_cls()
    msg.header = header
    msg.height, msg.width = int(mask.shape[0]), int(mask.shape[1])
    msg.encoding, msg.is_bigendian, msg.step = "mono8", 0, int(mask.shape[1])
    msg.data = (np.asarray(mask, np.uint8) * 255).tobytes()
    return msg


def defects_message(result, header: Header) -> String:
    """The compact result a PLC bridge reads: stamp, decision, scores and the defect regions (frame pixels)."""
    regions = result.regions()
    doc = {
        "stamp": f"{header.stamp.sec}.{header.stamp.nanosec:09d}",
        "frame_id": header.frame_id,
        "is_anomaly": bool(result.is_anomaly),
        "score": round(float(result.score), 6),
        "raw_score": float(result.raw_score),
        "pixel_threshold": result.pixel_threshold,
        "defect_area": int(sum(r.area for r in regions)),
        "regions": [r.as_dict() for r in regions],
    }
    return String(data=json.dumps(doc, separators=(",", ":")))


def region_markers(result, header: Header, frame_size: tuple[int, int], depth: float, focal_px: float) -> MarkerArray:
    """Each defect region as a red rectangle (LINE_STRIP) in the camera's optical frame, for RViz.

    A pixel (u, v) is drawn at ``((u - cx) z / f, (v - cy) z / f, z)`` with ``z = depth`` (optical frame:
    x right, y down, z forward), the principal point at the frame's centre and ``f = focal_px`` (the
    frame's width when 0). Give the camera's fx as ``marker_focal_px`` and RViz's Camera display puts the
    boxes over the image. The first marker deletes the previous frame's boxes.
    """
    width, height = frame_size
    f = float(focal_px) or float(width)
    cx, cy = width / 2.0, height / 2.0

    def point(u: float, v: float) -> Point:
        return Point(x=(u - cx) * depth / f, y=(v - cy) * depth / f, z=float(depth))

    out = MarkerArray()
    clear = Marker(header=header, ns="ad_inspect/defects", action=Marker.DELETEALL)
    out.markers.append(clear)
    for i, r in enumerate(result.regions()):
        m = Marker(header=header, ns="ad_inspect/defects", id=i, type=Marker.LINE_STRIP, action=Marker.ADD)
        m.scale.x = max(0.002, 2.0 * depth / f)  # two pixels wide
        m.color.r, m.color.g, m.color.b, m.color.a = 1.0, 0.1, 0.1, 1.0
        m.pose.orientation.w = 1.0
        x0, y0, x1, y1 = r.x, r.y, r.x + r.width, r.y + r.height
        m.points = [point(x0, y0), point(x1, y0), point(x1, y1), point(x0, y1), point(x0, y0)]
        m.text = f"peak {r.peak:.2f}, {r.area} px"
        out.markers.append(m)
    return out
