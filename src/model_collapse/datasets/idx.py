"""Read and write IDX files (the MNIST format), gzipped or plain."""

from __future__ import annotations

import gzip as _gzip
import os
import zlib
from pathlib import Path

import numpy as np

from .errors import DataError

# IDX type codes (third magic byte); multi-byte values are big-endian on disk.
_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
           0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_CODES = {dt.newbyteorder("="): code for code, dt in _DTYPES.items()}


def read_idx(source: str | os.PathLike | bytes) -> np.ndarray:
    """Parse an IDX file (path or raw bytes, gzip detected by its magic) into a native-endian array."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        label, raw = "<in-memory IDX data>", bytes(source)
    else:
        label, raw = str(source), Path(source).read_bytes()
    fix = "delete it and fetch it again"
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = _gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{label}: damaged gzip data ({exc}); {fix}.") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DataError(f"{label}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'}); {fix}.")
    dtype, ndim = _DTYPES[raw[2]], raw[3]
    start = 4 + 4 * ndim
    if ndim == 0 or len(raw) < start:
        raise DataError(f"{label}: IDX header is truncated or declares {ndim} dimensions; {fix}.")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - start != expected:
        raise DataError(f"{label}: IDX header declares shape {dims} ({expected} payload bytes) "
                        f"but the file holds {len(raw) - start}; it is truncated or corrupt, {fix}.")
    # astype copies into a writable, native-endian array in one vectorised step.
    return np.frombuffer(raw, dtype, offset=start).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray, gzip: bool = True) -> Path:
    """Write `array` as an IDX file (gzipped when `gzip`), e.g. to build test fixtures."""
    arr = np.asarray(array)
    code = _CODES.get(arr.dtype.newbyteorder("="))
    if code is None or arr.ndim == 0 or arr.ndim > 255:
        raise ValueError(f"cannot store dtype {arr.dtype} with {arr.ndim} dims in IDX")
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, ">u4").tobytes()
    data = header + arr.astype(_DTYPES[code]).tobytes()
    path = Path(path)
    path.write_bytes(_gzip.compress(data, mtime=0) if gzip else data)
    return path
