"""A small, fast GGUF reader: header, metadata, tensor infos, memory-mapped tensor data.

`gguf.GGUFReader` builds a numpy view per value, so opening a file whose tokenizer
arrays hold 262k strings (Gemma 3) takes 10-40 s. This reader parses the header
with `struct` on one memory map: numeric arrays become one `np.frombuffer` each,
string arrays one pass over their length prefixes; opening Gemma 3 270M takes
well under a second. Tensor data is not read at open: `GGUFTensor.data` maps just
that tensor's bytes (`np.memmap`), shaped as `GGUFReader` shapes it, so that
`gguf.quants.dequantize(t.data, t.tensor_type)` works unchanged and the pages are
released when the caller drops the array.

The field objects answer `contents()` like `gguf.ReaderField.contents()` (Python
scalars and lists), so code written for either reader works with both.
Little-endian GGUF v2 and v3 only (what llama.cpp writes).
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TPAError

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32

# GGUF value types (gguf.GGUFValueType).
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)
_SCALAR = {
    UINT8: np.uint8,
    INT8: np.int8,
    UINT16: np.uint16,
    INT16: np.int16,
    UINT32: np.uint32,
    INT32: np.int32,
    FLOAT32: np.float32,
    BOOL: np.bool_,
    UINT64: np.uint64,
    INT64: np.int64,
    FLOAT64: np.float64,
}
_TYPE_NAMES = (
    "UINT8",
    "INT8",
    "UINT16",
    "INT16",
    "UINT32",
    "INT32",
    "FLOAT32",
    "BOOL",
    "STRING",
    "ARRAY",
    "UINT64",
    "INT64",
    "FLOAT64",
)
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")


@dataclass
class GGUFField:
    """One metadata key: `type` (a GGUF value type), `item_type` for arrays, and `value`:
    a Python scalar / str, a read-only numpy array (numeric arrays) or a list of str."""

    name: str
    type: int
    value: Any
    item_type: int | None = None

    def contents(self) -> Any:
        """The value as `gguf.ReaderField.contents()` returns it (lists, Python scalars)."""
        if isinstance(self.value, np.ndarray):
            return self.value.tolist()
        return list(self.value) if isinstance(self.value, list) else self.value

    def __len__(self) -> int:
        return len(self.value) if self.type == ARRAY else 1


@dataclass
class GGUFTensor:
    name: str
    tensor_type: Any  # gguf.GGMLQuantizationType
    shape: tuple[int, ...]  # as stored: ne0 (the contiguous dimension) first
    n_elements: int
    n_bytes: int
    data_offset: int  # absolute, in the file
    path: str

    @property
    def data(self) -> np.ndarray:
        """This tensor's bytes, memory-mapped read-only: float types as their numpy dtype,
        quantised types as uint8 blocks, in `GGUFReader.tensors[i].data`'s shape."""
        from gguf.constants import GGMLQuantizationType as Q
        from gguf.quants import quant_shape_to_byte_shape

        np_shape = tuple(reversed(self.shape))
        plain = {
            Q.F32: np.float32,
            Q.F16: np.float16,
            Q.F64: np.float64,
            Q.I8: np.int8,
            Q.I16: np.int16,
            Q.I32: np.int32,
            Q.I64: np.int64,
        }
        if self.tensor_type in plain:
            dtype, count = plain[self.tensor_type], self.n_elements
        else:
            dtype, count, np_shape = np.uint8, self.n_bytes, quant_shape_to_byte_shape(np_shape, self.tensor_type)
        if count == 0:
            return np.zeros(np_shape, dtype=dtype)
        return np.memmap(self.path, dtype=dtype, mode="r", offset=self.data_offset, shape=(count,)).reshape(np_shape)


class GGUFFile:
    """`fields` (name -> GGUFField, file order), `tensors` (file order), `alignment`,
    `data_offset`, `version`. Raises TPAError (one line, naming the file) on bad input."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        try:
            with open(self.path, "rb") as f:
                size = f.seek(0, 2)
                if size < 24:
                    raise TPAError(f"{self.path}: not a GGUF file ({size} bytes, too short for a header)")
                self._buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as e:
            raise TPAError(f"{self.path}: cannot open ({e.strerror or type(e).__name__})") from e
        try:
            self._parse(size)
        except (struct.error, IndexError, ValueError, UnicodeDecodeError, OverflowError) as e:
            raise TPAError(f"{self.path}: truncated or corrupt GGUF header ({type(e).__name__}: {e})") from e
        finally:
            self._buf.close()  # tensors map their own bytes on demand
            del self._buf

    # ------------------------------------------------------------------ parsing
    def _parse(self, size: int) -> None:
        buf = self._buf
        if buf[:4] != GGUF_MAGIC:
            raise TPAError(f"{self.path}: not a GGUF file (magic {bytes(buf[:4])!r}, expected b'GGUF')")
        version = _U32.unpack_from(buf, 4)[0]
        if version not in SUPPORTED_VERSIONS:
            if version & 0xFFFF == 0:
                raise TPAError(f"{self.path}: big-endian GGUF is not supported; re-convert little-endian")
            raise TPAError(f"{self.path}: GGUF version {version} is not supported; supported: 2, 3")
        self.version = version
        n_tensors, n_kv = struct.unpack_from("<QQ", buf, 8)
        off = 24
        self.fields: dict[str, GGUFField] = {
            "GGUF.version": GGUFField("GGUF.version", UINT32, version),
            "GGUF.tensor_count": GGUFField("GGUF.tensor_count", UINT64, n_tensors),
            "GGUF.kv_count": GGUFField("GGUF.kv_count", UINT64, n_kv),
        }
        for _ in range(n_kv):
            key, off = self._string(off)
            vtype = _U32.unpack_from(buf, off)[0]
            off += 4
            if key in self.fields:
                raise TPAError(f"{self.path}: GGUF metadata key {key!r} appears twice")
            value, item_type, off = self._value(vtype, off, key)
            self.fields[key] = GGUFField(key, vtype, value, item_type)

        infos = []
        for _ in range(n_tensors):
            name, off = self._string(off)
            n_dims = _U32.unpack_from(buf, off)[0]
            off += 4
            if n_dims > 8:
                raise TPAError(f"{self.path}: tensor {name!r} claims {n_dims} dimensions (at most 8)")
            dims = struct.unpack_from(f"<{n_dims}Q", buf, off)
            off += 8 * n_dims
            ttype, rel = struct.unpack_from("<IQ", buf, off)
            off += 12
            infos.append((name, dims, ttype, rel))

        align = self.fields.get("general.alignment")
        self.alignment = DEFAULT_ALIGNMENT
        if align is not None:
            a = align.value
            if align.type != UINT32 or a == 0 or a & (a - 1):
                raise TPAError(f"{self.path}: GGUF metadata general.alignment = {a!r} is not a power-of-two uint32")
            self.alignment = int(a)
        self.data_offset = off + (-off % self.alignment)
        self.tensors = self._tensors(infos, size)

    def _string(self, off: int) -> tuple[str, int]:
        n = _U64.unpack_from(self._buf, off)[0]
        end = off + 8 + n
        if end > len(self._buf):
            raise ValueError(f"string of {n} bytes at offset {off} runs past the end of the file")
        return self._buf[off + 8 : end].decode("utf-8"), end

    def _value(self, vtype: int, off: int, key: str):
        buf = self._buf
        if vtype in _SCALAR:
            dt = np.dtype(_SCALAR[vtype]).newbyteorder("<")
            v = np.frombuffer(buf, dt, 1, off)[0]
            return v.item(), None, off + dt.itemsize
        if vtype == STRING:
            s, off = self._string(off)
            return s, None, off
        if vtype != ARRAY:
            raise TPAError(f"{self.path}: GGUF metadata {key!r} has unknown value type {vtype}")
        itype, count = struct.unpack_from("<IQ", buf, off)
        off += 12
        if itype in _SCALAR:
            dt = np.dtype(_SCALAR[itype]).newbyteorder("<")
            end = off + count * dt.itemsize
            if end > len(buf):
                raise ValueError(f"array {key!r} of {count} items runs past the end of the file")
            arr = np.frombuffer(buf, dt, count, off).copy()  # copied: the map is closed after parsing
            arr.flags.writeable = False
            return arr, itype, end
        if itype == STRING:
            return self._strings_at(off, count)
        raise TPAError(
            f"{self.path}: GGUF metadata {key!r} is an array of {_type_name(itype)}; "
            "supported item types: numbers, bool, string"
        )

    def _strings_at(self, off: int, count: int):
        """`count` length-prefixed strings from `off`: one pass over the prefixes, then
        one decode per string from a single bytes copy of the region."""
        buf = self._buf
        unpack = _U64.unpack_from
        starts = [0] * count
        lens = [0] * count
        pos = off
        for i in range(count):
            n = unpack(buf, pos)[0]
            starts[i] = pos + 8 - off
            lens[i] = n
            pos += 8 + n
        if pos > len(buf):
            raise ValueError(f"string array of {count} items runs past the end of the file")
        raw = buf[off:pos]
        return [raw[s : s + n].decode("utf-8") for s, n in zip(starts, lens)], STRING, pos

    def _tensors(self, infos, size: int) -> list[GGUFTensor]:
        from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

        out, seen = [], set()
        for name, dims, ttype, rel in infos:
            if name in seen:
                raise TPAError(f"{self.path}: tensor {name!r} appears twice")
            seen.add(name)
            try:
                qt = GGMLQuantizationType(ttype)
                block, type_size = GGML_QUANT_SIZES[qt]
            except (ValueError, KeyError):
                raise TPAError(f"{self.path}: tensor {name!r} has unknown GGML type {ttype}") from None
            n_el = int(np.prod(dims, dtype=np.int64)) if dims else 1
            if dims and dims[0] % block:
                raise TPAError(
                    f"{self.path}: tensor {name!r} row of {dims[0]} is not a multiple of "
                    f"the {qt.name} block size {block}"
                )
            n_bytes = n_el * type_size // block
            start = self.data_offset + rel
            if start + n_bytes > size:
                raise TPAError(
                    f"{self.path}: tensor {name!r} data ({n_bytes} bytes at {start}) runs past "
                    f"the end of the file ({size} bytes); the file is truncated"
                )
            out.append(GGUFTensor(name, qt, tuple(int(d) for d in dims), n_el, n_bytes, start, self.path))
        return out

    # ------------------------------------------------------------------ access
    def get(self, key: str, default: Any = None) -> Any:
        """A metadata value as `contents()` gives it, or `default` when absent."""
        f = self.fields.get(key)
        return default if f is None else f.contents()


def _type_name(t: int) -> str:
    return _TYPE_NAMES[t] if 0 <= t < len(_TYPE_NAMES) else str(t)
