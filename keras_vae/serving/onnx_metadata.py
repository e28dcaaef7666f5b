"""Setting one metadata entry of a serialized ONNX model, without the ``onnx`` package.

``ModelProto.metadata_props`` is field 14, a repeated ``StringStringEntryProto``
(``key`` = 1, ``value`` = 2). `set_metadata_entry` edits the protobuf wire format
directly, so a serving-only install (onnxruntime, no ``onnx``) can write an
anomaly threshold into an exported file; every other byte is kept.
"""

from __future__ import annotations

__all__ = ["set_metadata_entry"]

_METADATA_PROPS = 14  # ModelProto.metadata_props: repeated StringStringEntryProto {key = 1, value = 2}


def set_metadata_entry(data: bytes, key: str, value: str) -> bytes:
    """The ONNX model ``data`` with its metadata entry ``key`` replaced by (or added as) ``value``.

    Every other field is kept as it was, in order; the entry goes last. Raises
    ValueError when ``data`` is not a well-formed protobuf message.
    """
    kept = [raw for number, raw, body in _fields(data)
            if number != _METADATA_PROPS or _entry_key(body) != key]
    entry = _field(1, key.encode()) + _field(2, value.encode())
    return b"".join(kept) + _field(_METADATA_PROPS, entry)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated or malformed protobuf")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if byte < 0x80:
            return value, pos


def _fields(data: bytes):
    """(field number, raw bytes of the whole field, payload of a length-delimited field or b"")."""
    pos = 0
    while pos < len(data):
        start = pos
        tag, pos = _varint(data, pos)
        number, wire = tag >> 3, tag & 7
        body = b""
        if wire == 0:
            _, pos = _varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(data, pos)
            body = data[pos : pos + length]
            pos += length
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
        if number < 1 or pos > len(data):
            raise ValueError("truncated or malformed protobuf")
        yield number, data[start:pos], body


def _entry_key(body: bytes) -> str | None:
    for number, _, payload in _fields(body):
        if number == 1:
            return payload.decode("utf-8", "replace")
    return None


def _field(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | 2) + _encode_varint(len(payload)) + payload


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)
