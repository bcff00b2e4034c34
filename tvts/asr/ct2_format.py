"""Reading (and, for tests and tooling, writing) CTranslate2 `model.bin` files.

Layout, little-endian: format version (uint32); model name (uint16 length including the NUL,
then the bytes); revision (uint32); variable count (uint32); per variable: name (as above),
rank (uint8), dims (uint32 each), dtype id (uint8), byte count (uint32), raw data; then an
alias table: count (uint32), then (alias name, target name) pairs.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

# dtype ids in the order CTranslate2 numbers them.
DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")


class CT2FormatError(ValueError):
    """The file is not a (supported) CTranslate2 model."""


@dataclass
class CT2Model:
    name: str
    revision: int
    version: int
    variables: dict[str, np.ndarray] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> np.ndarray:
        return self.variables[self.aliases.get(name, name)]


def _read(f: BinaryIO, fmt: str) -> tuple:
    size = struct.calcsize(fmt)
    data = f.read(size)
    if len(data) != size:
        raise CT2FormatError("unexpected end of file")
    return struct.unpack(fmt, data)


def _read_string(f: BinaryIO) -> str:
    (n,) = _read(f, "<H")
    raw = f.read(n)
    if len(raw) != n:
        raise CT2FormatError("unexpected end of file in a string")
    return raw.rstrip(b"\0").decode()


def _bf16_to_f32(raw: bytes, shape: tuple[int, ...]) -> np.ndarray:
    u16 = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
    return u16.view(np.float32).reshape(shape)


def read_ct2(path: str | Path) -> CT2Model:
    path = Path(path)
    with open(path, "rb") as f:
        (version,) = _read(f, "<I")
        if version < 5:
            raise CT2FormatError(f"{path}: CTranslate2 format version {version} is not supported")
        name = _read_string(f)
        (revision,) = _read(f, "<I")
        (count,) = _read(f, "<I")
        model = CT2Model(name, revision, version)
        for _ in range(count):
            var = _read_string(f)
            (rank,) = _read(f, "<B")
            shape = _read(f, f"<{rank}I") if rank else ()
            (dtype_id,) = _read(f, "<B")
            (nbytes,) = _read(f, "<I")
            raw = f.read(nbytes)
            if len(raw) != nbytes:
                raise CT2FormatError(f"{path}: variable {var} is truncated")
            if dtype_id >= len(DTYPES):
                raise CT2FormatError(f"{path}: variable {var} has unknown dtype id {dtype_id}")
            dtype = DTYPES[dtype_id]
            if dtype == "bfloat16":
                model.variables[var] = _bf16_to_f32(raw, shape)
            else:
                model.variables[var] = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")
                                                     ).reshape(shape)
        rest = f.read(4)
        if len(rest) == 4:
            (n_alias,) = struct.unpack("<I", rest)
            for _ in range(n_alias):
                alias = _read_string(f)
                model.aliases[alias] = _read_string(f)
    return model


def _write_string(f: BinaryIO, s: str) -> None:
    raw = s.encode() + b"\0"
    f.write(struct.pack("<H", len(raw)))
    f.write(raw)


def write_ct2(path: str | Path, model: CT2Model) -> None:
    """The inverse of `read_ct2` (bfloat16 is written as float32)."""
    with open(path, "wb") as f:
        f.write(struct.pack("<I", model.version))
        _write_string(f, model.name)
        f.write(struct.pack("<I", model.revision))
        f.write(struct.pack("<I", len(model.variables)))
        for var, arr in model.variables.items():
            _write_string(f, var)
            f.write(struct.pack("<B", arr.ndim))
            if arr.ndim:
                f.write(struct.pack(f"<{arr.ndim}I", *arr.shape))
            dtype = arr.dtype.name
            if dtype not in DTYPES:
                raise CT2FormatError(f"{var}: dtype {dtype} cannot be stored")
            raw = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
            f.write(struct.pack("<B", DTYPES.index(dtype)))
            f.write(struct.pack("<I", len(raw)))
            f.write(raw)
        f.write(struct.pack("<I", len(model.aliases)))
        for alias, target in model.aliases.items():
            _write_string(f, alias)
            _write_string(f, target)
