"""A compact, versioned binary container for state snapshots: a JSON header plus raw arrays.

Layout (little-endian)::

    b"CPST" | u16 version | u32 header_len | header JSON | array bytes, back to back

The header holds ``kind`` (what the snapshot is of), ``fields`` (plain JSON values) and
``arrays`` (name, dtype, shape of each array in payload order). Only numeric dtypes are
read and nothing is unpickled, so a snapshot from elsewhere cannot run code; anything that
does not match (magic, version, kind, sizes) raises :class:`SnapshotError`.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

MAGIC = b"CPST"
_PREFIX = struct.Struct("<4sHI")
DTYPES = frozenset({"<f4", "<f8", "<i8", "|u1"})
"""The array dtypes a snapshot may hold."""


class SnapshotError(ValueError):
    """A snapshot is corrupt, of another kind, or of a version this build does not read."""


def pack(*, kind: str, version: int, fields: Mapping[str, Any], arrays: Mapping[str, NDArray[Any]]) -> bytes:
    """Encode ``fields`` (JSON values) and ``arrays`` (numeric numpy arrays) into one snapshot."""
    table = []
    payload = []
    for name, array in arrays.items():
        data = np.ascontiguousarray(array)
        dtype = data.dtype.newbyteorder("<") if data.dtype.byteorder == ">" else data.dtype
        if dtype.str not in DTYPES:
            raise TypeError(f"array {name!r} has dtype {data.dtype}; a snapshot holds only {sorted(DTYPES)}")
        table.append({"name": name, "dtype": dtype.str, "shape": list(data.shape)})
        payload.append(data.astype(dtype, copy=False).tobytes())
    header = json.dumps({"kind": kind, "fields": fields, "arrays": table}, separators=(",", ":")).encode()
    return b"".join((_PREFIX.pack(MAGIC, version, len(header)), header, *payload))


def unpack(data: bytes, *, kind: str, version: int) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
    """The fields and arrays of a snapshot written by :func:`pack` with this ``kind`` and ``version``."""
    if len(data) < _PREFIX.size:
        raise SnapshotError("snapshot is shorter than its header")
    magic, found, header_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise SnapshotError(f"not a ClassPulse state snapshot (magic {magic!r}, expected {MAGIC!r})")
    if found != version:
        raise SnapshotError(f"{kind} snapshot version {found} is not supported; this build reads version {version}")
    start = _PREFIX.size
    end = start + header_len
    if end > len(data):
        raise SnapshotError("snapshot header length exceeds the snapshot size")
    try:
        header = json.loads(data[start:end])
        if header["kind"] != kind:
            raise SnapshotError(f"snapshot holds {header['kind']!r}, expected {kind!r}")
        fields, table = header["fields"], header["arrays"]
        arrays: dict[str, NDArray[Any]] = {}
        offset = end
        for entry in table:
            name, dtype, shape = str(entry["name"]), str(entry["dtype"]), tuple(int(n) for n in entry["shape"])
            if dtype not in DTYPES or any(n < 0 for n in shape):
                raise SnapshotError(f"snapshot array {name!r} has an unsupported layout {dtype} {shape}")
            size = np.dtype(dtype).itemsize * math.prod(shape)
            if offset + size > len(data):
                raise SnapshotError(f"snapshot is truncated inside array {name!r}")
            arrays[name] = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=offset).reshape(shape).copy()
            offset += size
    except SnapshotError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise SnapshotError(f"snapshot header is malformed: {exc!r}") from exc
    if offset != len(data):
        raise SnapshotError(f"snapshot has {len(data) - offset} bytes after its last array")
    if not isinstance(fields, dict):
        raise SnapshotError("snapshot fields are not a JSON object")
    return fields, arrays
