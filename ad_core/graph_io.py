"""What every exported graph has in common: its output names and the metadata it carries.

:mod:`ad_core.export` writes them (torch, onnx), :mod:`ad_core.runtime` reads them. Reading needs
neither torch nor the ``onnx`` package: importing ``onnx`` takes about 0.7 s (its ``ml_dtypes``
extension), more than the rest of the deployed path's start-up together, so :func:`onnx_metadata`
reads the model's ``metadata_props`` straight from the protobuf wire format, skipping the graph
and its weights without parsing them (``tests/test_runtime.py`` checks it against ``onnx``'s parser).
"""

from __future__ import annotations

from pathlib import Path

from ad_core.errors import BundleError

META_PREFIX = "ad_inspect."
EMBEDDING_OUTPUT = "embedding"
SCORE_OUTPUTS = ("pred_score", "anomaly_map")

# onnx.proto: ModelProto.ir_version = 1, .graph = 7, .metadata_props = 14 (StringStringEntryProto: key = 1, value = 2)
_IR_VERSION, _GRAPH, _METADATA_PROPS = 1, 7, 14


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(buf: memoryview):
    """``(field number, wire type, value)`` of one protobuf message; value: int or a memoryview (wire type 2)."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise ValueError("length past the end")
            value, pos = buf[pos : pos + size], pos + size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            if pos > len(buf):
                raise ValueError("fixed-size field past the end")
            value = None
        else:  # groups (3, 4) are not used by ONNX; 6 and 7 do not exist
            raise ValueError(f"wire type {wire}")
        yield number, wire, value


def read_metadata_props(data: bytes) -> dict[str, str]:
    """All ``metadata_props`` of a serialised ``onnx.ModelProto``; ValueError when it is not one."""
    props, seen = {}, set()
    for number, wire, value in _fields(memoryview(data)):
        seen.add(number)
        if number == _METADATA_PROPS and wire == 2:
            entry = {n: bytes(v).decode("utf-8") for n, w, v in _fields(value) if w == 2 and n in (1, 2)}
            props[entry.get(1, "")] = entry.get(2, "")
    if not {_IR_VERSION, _GRAPH} <= seen:
        raise ValueError("no ir_version or graph: not an ONNX model")
    return props


def onnx_metadata(model_bytes_or_path: bytes | str | Path, name: str | Path | None = None) -> dict[str, str]:
    """The ``ad_inspect.*`` metadata of an ONNX model; a file that is not ONNX raises :class:`BundleError`."""
    name = name or (model_bytes_or_path if not isinstance(model_bytes_or_path, bytes) else "ONNX model")
    try:
        data = model_bytes_or_path if isinstance(model_bytes_or_path, bytes) else Path(model_bytes_or_path).read_bytes()
        props = read_metadata_props(data)
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise BundleError(f"{name}: not a readable ONNX model ({exc})") from exc
    meta = {k[len(META_PREFIX) :]: v for k, v in props.items() if k.startswith(META_PREFIX)}
    if not meta.get("model"):
        raise BundleError(f"{name}: an ONNX model without ad_inspect metadata; export it with `ad-core convtrt`")
    return meta
