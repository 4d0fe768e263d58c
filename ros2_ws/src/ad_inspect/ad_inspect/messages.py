"""The node's outgoing messages, built from an :class:`ad_core.inspector.Inspection` and the frame's header."""

from __future__ import annotations

from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Vector3Stamped
from std_msgs.msg import Bool, Float32, Header


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
