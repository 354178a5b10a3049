"""MATLAB ``.mat`` containers for the matRad writer: v5 (scipy, compressed) and v7.3 (HDF5).

The matRad layout is built once as a tree of plain values and written by
either container:

============================  ==========================================
tree value                    MATLAB value
============================  ==========================================
``dict``                      1 x 1 struct (fields in insertion order)
:class:`MatCell`              cell of the given 2-D shape
``str``                       1 x n char
numeric ``ndarray``           array of the same class; 0-D -> 1 x 1, 1-D -> 1 x n
``float`` / ``int``           1 x 1 double
``bool``                      1 x 1 logical
``scipy.sparse`` matrix       double sparse
:class:`RowMappedSparse`      double sparse with rows renumbered on the fly
============================  ==========================================

MATLAB v5 stores the byte count of every variable in 32 bits, so a variable
whose data exceeds 2^31 - 1 bytes needs v7.3 (MATLAB's own ``-v7`` limit is
2 GB per variable).  :func:`save_mat` picks v5 whenever every variable fits.
v7.3 files are HDF5 with a 512-byte MATLAB header in the user block; arrays
are stored with their dimensions reversed, cells as object references into
``#refs#``, strings as uint16 with ``MATLAB_class = 'char'``.
"""

from __future__ import annotations

import datetime as _dt
import enum
from pathlib import Path

import numpy as np

from .._log import atomic_output, get_logger
from ..errors import InputError

log = get_logger(__name__)

#: largest variable MATLAB v5 can describe: element byte counts are unsigned 32-bit, and MATLAB
#: itself refuses variables of 2 GB or more in ``-v7``; a small margin covers the tag overhead
V5_MAX_VARIABLE_BYTES = 2**31 - 2**20
#: zlib level of v5 files (MATLAB reads any level; 1 is the fastest with nearly the best ratio on doses)
V5_ZLIB_LEVEL = 1
_MI_COMPRESSED = 15  # MAT-file v5 data type of a zlib-compressed data element


class MatFormat(enum.Enum):
    """MATLAB file format of a written matRad file."""

    AUTO = "auto"   # v5 when every variable fits, else v7.3
    V5 = "v5"       # scipy.io.savemat, zlib-compressed (MATLAB "-v7")
    V73 = "v7.3"    # HDF5 (MATLAB "-v7.3")


def parse_mat_format(value: "MatFormat | str | None", what: str = "mat_format") -> MatFormat:
    """``'v5'``, ``'v7.3'``, ``'auto'`` (or a :class:`MatFormat`, or None = auto) -> :class:`MatFormat`."""
    if value is None:
        return MatFormat.AUTO
    if isinstance(value, MatFormat):
        return value
    key = str(value).strip().lower()
    key = {"7.3": "v7.3", "v73": "v7.3", "73": "v7.3", "5": "v5", "v7": "v5", "7": "v5"}.get(key, key)
    for f in MatFormat:
        if f.value == key:
            return f
    raise InputError(f"{what} {value!r}: expected one of 'v5', 'v7.3', 'auto'")


class MatCell:
    """A MATLAB cell array: ``items`` (filled column by column, as MATLAB does) of a 2-D ``shape``."""

    def __init__(self, items, shape: tuple[int, int] | None = None):
        items = list(items)
        arr = np.empty(len(items), dtype=object)
        for i, v in enumerate(items):
            arr[i] = v
        self.items = arr.reshape(shape if shape is not None else (1, len(items)), order="F")


class RowMappedSparse:
    """A CSC matrix whose row ``r`` is written as row ``row_map[r]`` of an ``n_rows``-row double sparse.

    Lets a voxels-of-interest x beamlets matrix be written as matRad's
    full-cube ``dij.physicalDose{1}`` without building the re-ordered copy
    in memory for v7.3 (written column batch by column batch).
    """

    def __init__(self, matrix, row_map: np.ndarray, n_rows: int, batch_nnz: int = 1 << 23):
        from scipy import sparse

        m = sparse.csc_matrix(matrix)
        if not m.has_canonical_format:  # duplicates summed on a copy, never in the caller's matrix
            m = m.copy()
            m.sum_duplicates()
        self.matrix = m
        self.row_map = np.asarray(row_map, dtype=np.int64)
        self.n_rows = int(n_rows)
        self.batch_nnz = max(int(batch_nnz), 1)

    @property
    def shape(self) -> tuple[int, int]:
        return self.n_rows, int(self.matrix.shape[1])

    def materialize(self):
        """The re-ordered double CSC matrix (rows sorted within each column)."""
        from scipy import sparse

        m = self.matrix
        out = sparse.csc_matrix((m.data.astype(np.float64), self.row_map[m.indices], m.indptr.copy()),
                                shape=self.shape)
        out.sort_indices()
        return out


# ---------------------------------------------------------------- sizes and the v5 / v7.3 choice
def _nbytes(value) -> int:
    """Bytes of the data MATLAB v5 stores for ``value`` (tags excluded; strings as uint16)."""
    from scipy import sparse

    if isinstance(value, dict):
        return sum(_nbytes(v) + 64 for v in value.values())
    if isinstance(value, MatCell):
        return sum(_nbytes(v) + 64 for v in value.items.ravel())
    if isinstance(value, str):
        return 2 * len(value)
    if isinstance(value, RowMappedSparse):
        m = value.matrix
        return 12 * int(m.nnz) + 4 * (m.shape[1] + 1)  # double data + int32 ir + int32 jc
    if sparse.issparse(value):
        return 12 * int(value.nnz) + 4 * (value.shape[1] + 1)
    if isinstance(value, (bool, int, float, np.number, np.bool_)):
        return 8
    return int(np.asarray(value).nbytes)


def choose_format(variables: dict, requested: MatFormat) -> MatFormat:
    """The format :func:`save_mat` writes: v7.3 for AUTO when a variable exceeds the v5 limit."""
    if requested is not MatFormat.AUTO:
        return requested
    big = {k: _nbytes(v) for k, v in variables.items()}
    over = {k: n for k, n in big.items() if n > V5_MAX_VARIABLE_BYTES}
    if over:
        log.info("matRad file: %s beyond the MATLAB v5 limit (%.2f GiB); writing v7.3",
                 ", ".join(f"{k} = {n / 2**30:.2f} GiB" for k, n in over.items()), V5_MAX_VARIABLE_BYTES / 2**30)
        return MatFormat.V73
    return MatFormat.V5


def save_mat(path: str | Path, variables: dict, mat_format: MatFormat | str | None = None) -> MatFormat:
    """Write ``variables`` (name -> tree value) atomically; returns the format written."""
    p = Path(path)
    fmt = parse_mat_format(mat_format)
    chosen = choose_format(variables, fmt)
    if chosen is MatFormat.V5:
        over = {k: n for k, n in ((k, _nbytes(v)) for k, v in variables.items()) if n > V5_MAX_VARIABLE_BYTES}
        if over:
            k, n = next(iter(over.items()))
            raise InputError(f"{p}: variable '{k}' holds {n / 2**30:.2f} GiB, beyond the MATLAB v5 limit of "
                             f"2 GiB per variable; use mat_format 'v7.3' (or 'auto')")
    with atomic_output(p) as tmp:
        if chosen is MatFormat.V5:
            _save_v5(tmp, variables)
        else:
            _save_v73(tmp, variables)
    return chosen


# ---------------------------------------------------------------- v5 (scipy)
def _to_scipy(value):
    """Tree value -> what scipy.io.savemat writes as the same MATLAB value."""
    from scipy import sparse

    if isinstance(value, dict):
        return {k: _to_scipy(v) for k, v in value.items()}
    if isinstance(value, MatCell):
        out = np.empty(value.items.shape, dtype=object)
        for idx in np.ndindex(value.items.shape):
            out[idx] = _to_scipy(value.items[idx])
        return out
    if isinstance(value, str):
        return value
    if isinstance(value, RowMappedSparse):
        return value.materialize()
    if sparse.issparse(value):
        m = sparse.csc_matrix(value, dtype=np.float64)  # MATLAB sparse is double (or logical) only
        m.sum_duplicates()
        return m
    if isinstance(value, (bool, np.bool_)):
        return np.array([[bool(value)]])
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return np.array([[float(value)]])
    arr = np.asarray(value)
    if arr.ndim == 0:
        return arr.reshape(1, 1)
    if arr.ndim == 1:
        return arr.reshape(1, -1)
    return arr


def _save_v5(path: Path, variables: dict) -> None:
    """Each variable serialised by scipy.io.savemat (uncompressed) and wrapped in a miCOMPRESSED element.

    This is the file ``savemat(do_compression=True)`` writes, but compressed at zlib level
    :data:`V5_ZLIB_LEVEL` instead of scipy's fixed level 6: for a dose-influence matrix level 1 is
    about 7 times faster for files about 7 % larger (measured on 5 M non-zeros).
    """
    import io
    import struct
    import zlib

    import scipy.io as sio

    with open(path, "wb") as fh:
        for i, (name, value) in enumerate(variables.items()):
            buf = io.BytesIO()
            sio.savemat(buf, {name: _to_scipy(value)}, format="5", do_compression=False, oned_as="row",
                        long_field_names=False)
            raw = buf.getbuffer()
            if i == 0:
                fh.write(raw[:128])  # the 128-byte MAT-file header (text, version, endian indicator)
            packed = zlib.compress(raw[128:], V5_ZLIB_LEVEL)
            del raw
            buf.close()
            # data element tag in the file's (native) byte order: type miCOMPRESSED, byte count
            fh.write(struct.pack("=II", _MI_COMPRESSED, len(packed)))
            fh.write(packed)


# ---------------------------------------------------------------- v7.3 (HDF5)
_MATLAB_CLASS = {np.dtype(np.float64): "double", np.dtype(np.float32): "single", np.dtype(np.uint8): "uint8",
                 np.dtype(np.int8): "int8", np.dtype(np.uint16): "uint16", np.dtype(np.int16): "int16",
                 np.dtype(np.uint32): "uint32", np.dtype(np.int32): "int32", np.dtype(np.uint64): "uint64",
                 np.dtype(np.int64): "int64"}


def _header() -> bytes:
    now = _dt.datetime.now().strftime("%a %b %d %H:%M:%S %Y")
    text = f"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: {now} HDF5 schema 1.00 .".encode("ascii")
    return text.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"


def _save_v73(path: Path, variables: dict) -> None:
    import h5py

    with h5py.File(path, "w", userblock_size=512) as f:
        w = _H5Writer(f)
        for k, v in variables.items():
            w.write(f, k, v)
    with open(path, "r+b") as fh:
        fh.write(_header())


class _H5Writer:
    """MATLAB v7.3 writer of tree values (numeric arrays, strings, structs, cells, sparse)."""

    def __init__(self, f):
        self.f = f
        self.refs = f.require_group("#refs#")
        self.n = 0

    def _ref_name(self) -> str:
        self.n += 1
        return f"r{self.n}"

    def write(self, group, name: str, value):
        from scipy import sparse

        if isinstance(value, dict):
            g = group.create_group(name)
            g.attrs["MATLAB_class"] = np.bytes_("struct")
            for k, v in value.items():
                self.write(g, k, v)
            self._fields(g, list(value.keys()))
            return g
        if isinstance(value, str):
            return self._string(group, name, value)
        if isinstance(value, RowMappedSparse):
            return self._row_mapped(group, name, value)
        if sparse.issparse(value):
            return self._row_mapped(group, name, RowMappedSparse(value, np.arange(value.shape[0]), value.shape[0]))
        if isinstance(value, MatCell):
            return self._cell(group, name, value)
        if isinstance(value, (bool, np.bool_)):
            ds = group.create_dataset(name, data=np.array([[np.uint8(value)]]))
            ds.attrs["MATLAB_class"] = np.bytes_("logical")
            ds.attrs["MATLAB_int_decode"] = np.int32(1)
            return ds
        arr = np.asarray(value)
        if arr.dtype == bool:
            arr, cls = arr.astype(np.uint8), "logical"
        else:
            if arr.dtype not in _MATLAB_CLASS:
                arr = arr.astype(np.float64)
            cls = _MATLAB_CLASS[arr.dtype]
        if arr.ndim == 0:
            arr = arr.reshape(1, 1)
        elif arr.ndim == 1:
            arr = arr.reshape(1, -1)  # MATLAB row vector
        if arr.size == 0:
            ds = group.create_dataset(name, data=np.array(arr.shape, dtype=np.uint64))
            ds.attrs["MATLAB_class"] = np.bytes_(cls)
            ds.attrs["MATLAB_empty"] = np.uint8(1)
            return ds
        big = arr.size > 65536
        ds = group.create_dataset(name, data=np.ascontiguousarray(arr.T), compression="gzip" if big else None,
                                  compression_opts=1 if big else None)
        ds.attrs["MATLAB_class"] = np.bytes_(cls)
        if cls == "logical":
            ds.attrs["MATLAB_int_decode"] = np.int32(1)
        return ds

    @staticmethod
    def _fields(g, names):
        import h5py

        dt = h5py.vlen_dtype(np.dtype("S1"))
        arr = np.empty(len(names), dtype=object)
        for i, n in enumerate(names):
            arr[i] = np.array(list(n), dtype="S1")
        g.attrs.create("MATLAB_fields", arr, dtype=dt)

    @staticmethod
    def _string(group, name, text: str):
        if not text:
            ds = group.create_dataset(name, data=np.array([0, 0], dtype=np.uint64))
            ds.attrs["MATLAB_class"] = np.bytes_("char")
            ds.attrs["MATLAB_empty"] = np.uint8(1)
            return ds
        codes = np.array([ord(c) for c in text], dtype=np.uint16).reshape(-1, 1)  # MATLAB 1 x n
        ds = group.create_dataset(name, data=codes)
        ds.attrs["MATLAB_class"] = np.bytes_("char")
        ds.attrs["MATLAB_int_decode"] = np.int32(2)
        return ds

    def _cell(self, group, name, cell: MatCell):
        import h5py

        items = cell.items
        if items.size == 0:
            ds = group.create_dataset(name, data=np.array(items.shape, dtype=np.uint64))
            ds.attrs["MATLAB_class"] = np.bytes_("cell")
            ds.attrs["MATLAB_empty"] = np.uint8(1)
            return ds
        refs = np.empty(items.shape[::-1], dtype=h5py.ref_dtype)
        for idx in np.ndindex(items.shape):
            obj = self.write(self.refs, self._ref_name(), items[idx])
            refs[idx[::-1]] = obj.ref
        ds = group.create_dataset(name, data=refs, dtype=h5py.ref_dtype)
        ds.attrs["MATLAB_class"] = np.bytes_("cell")
        return ds

    @staticmethod
    def _row_mapped(group, name, rm: RowMappedSparse):
        """MATLAB sparse datasets (data, ir, jc) written in column batches with rows re-sorted within each
        column (as MATLAB requires), so that memory stays bounded for large matrices."""
        g = group.create_group(name)
        g.attrs["MATLAB_class"] = np.bytes_("double")
        g.attrs["MATLAB_sparse"] = np.uint64(rm.n_rows)
        m = rm.matrix
        nnz, n_cols = int(m.nnz), int(m.shape[1])
        ptr = m.indptr.astype(np.int64)
        g.create_dataset("jc", data=ptr.astype(np.uint64))
        if nnz == 0:
            return g
        # uncompressed: v7.3 is chosen for matrices beyond 2 GiB, where writing speed matters most
        d_data = g.create_dataset("data", shape=(nnz,), dtype=np.float64)
        d_ir = g.create_dataset("ir", shape=(nnz,), dtype=np.uint64)
        c0 = 0
        while c0 < n_cols:
            c1 = int(np.searchsorted(ptr, ptr[c0] + rm.batch_nnz, side="right")) - 1
            c1 = min(max(c1, c0 + 1), n_cols)
            a, b = int(ptr[c0]), int(ptr[c1])
            rows = rm.row_map[m.indices[a:b]]
            col = np.repeat(np.arange(c0, c1), np.diff(ptr[c0:c1 + 1]))
            order = np.lexsort((rows, col))
            d_ir[a:b] = rows[order].astype(np.uint64)
            d_data[a:b] = m.data[a:b][order].astype(np.float64)
            c0 = c1
        return g
