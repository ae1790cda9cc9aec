"""PostgreSQL binary COPY, built column by column with numpy.

Per-row Python string formatting is what makes the slow insert paths slow (DESIGN.md section 7).
Here each column becomes one array of bytes per row: fixed-width numbers, pgvector vectors and
``real[]`` arrays are packed for all rows at once by numpy; only text and JSON columns need a
per-row encode. Rows are then joined once.

Wire formats (PostgreSQL ``COPY ... WITH (FORMAT BINARY)``): an 11-byte signature, flags and
header-extension length, then per row an int16 field count and per field an int32 length (-1 for
NULL) and the value in the type's binary ``send`` format; an int16 -1 ends the data.
"""

from __future__ import annotations

import io
import json
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg2
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_TRAILER = b"\xff\xff"
_NULL = b"\xff\xff\xff\xff"
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_FLOAT4_OID = 700
_JSON = json.JSONEncoder(default=str)  # one encoder for every row: json.dumps(default=...) builds one per call


@dataclass(frozen=True)
class Column:
    """One column of a COPY: its name and the encoded field (length prefix + value) of each row."""

    name: str
    fields: Sequence[bytes]


def _fixed(values: np.ndarray, dtype: str) -> list[bytes]:
    """Big-endian fixed-width values with their int32 length prefix, all rows at once."""
    width = np.dtype(dtype).itemsize
    packed = np.empty(len(values), dtype=[("len", ">i4"), ("val", dtype)])
    packed["len"] = width
    packed["val"] = values
    raw = packed.tobytes()
    step = 4 + width
    return [raw[i : i + step] for i in range(0, len(raw), step)]


def _numbers(name: str, values: Sequence[Any] | np.ndarray, dtype: str, fill: Any) -> Column:
    if isinstance(values, np.ndarray) and values.dtype != object or not any(v is None for v in values):
        return Column(name, _fixed(np.asarray(values), dtype))
    filled = _fixed(np.asarray([fill if v is None else v for v in values]), dtype)
    return Column(name, [_NULL if v is None else f for v, f in zip(values, filled, strict=True)])


def int_column(name: str, values: Sequence[int | None] | np.ndarray, *, bits: int = 32) -> Column:
    """smallint (16), integer (32) or bigint (64) values; None is NULL."""
    dtypes = {16: ">i2", 32: ">i4", 64: ">i8"}
    if bits not in dtypes:
        raise ValueError(f"bits must be 16, 32 or 64, got {bits}")
    return _numbers(name, values, dtypes[bits], 0)


def float_column(name: str, values: Sequence[float | None]) -> Column:
    """double precision values; None is NULL."""
    return _numbers(name, values, ">f8", 0.0)


def bool_column(name: str, values: Sequence[bool | None]) -> Column:
    return _numbers(name, values, "?", False)


def _varlen(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big", signed=True) + data


def text_column(name: str, values: Sequence[str | None]) -> Column:
    return Column(name, [_NULL if v is None else _varlen(v.encode("utf-8")) for v in values])


def jsonb_column(name: str, values: Sequence[Any]) -> Column:
    """jsonb's binary format is a version byte (1) followed by the JSON text."""
    present = [v for v in values if v is not None]
    texts = iter(_json_texts(present))
    return Column(name, [_NULL if v is None else _varlen(b"\x01" + next(texts).encode("utf-8")) for v in values])


_ROW_BREAK = "\x00t2c-row\x00"  # never in stored JSON: jsonb refuses \u0000
_ROW_BREAK_JSON = f", {_JSON.encode(_ROW_BREAK)}, "


def _json_texts(values: Sequence[Any]) -> list[str]:
    """The JSON text of each value, from one run of the C encoder over all of them with a marker
    between (a call per value costs more than the encoding). Should a value's own text hold the
    marker, the split count is off and each value is encoded alone."""
    if len(values) < 2:
        return [_JSON.encode(v) for v in values]
    spaced: list[Any] = [_ROW_BREAK] * (2 * len(values) - 1)
    spaced[0::2] = values
    texts = _JSON.encode(spaced)[1:-1].split(_ROW_BREAK_JSON)
    return texts if len(texts) == len(values) else [_JSON.encode(v) for v in values]


def timestamptz_column(name: str, values: Sequence[datetime | None]) -> Column:
    """timestamptz is int64 microseconds since 2000-01-01 UTC; naive datetimes are taken as UTC."""

    def micros(value: datetime) -> int:
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        delta = aware - _PG_EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds

    return int_column(name, [None if v is None else micros(v) for v in values], bits=64)


def vector_column(name: str, vectors: np.ndarray, present: np.ndarray | None = None) -> Column:
    """pgvector ``vector``: int16 dim, int16 unused, dim big-endian float4. Rows where ``present``
    is False are NULL (``vectors`` holds one row per present row only)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    record = np.empty(n, dtype=[("len", ">i4"), ("dim", ">i2"), ("unused", ">i2"), ("val", ">f4", (dim,))])
    record["len"] = 4 + 4 * dim
    record["dim"] = dim
    record["unused"] = 0
    record["val"] = vectors
    return Column(name, _expand(_split(record), present))


def real_array_column(name: str, arrays: np.ndarray, present: np.ndarray | None = None) -> Column:
    """``real[]`` (one dimension): ndim, has-null flag, element type oid, length, lower bound 1,
    then per element an int32 length 4 and the float4. Rows where ``present`` is False are NULL."""
    arrays = np.ascontiguousarray(arrays, dtype=np.float32)
    n, k = arrays.shape
    record = np.empty(
        n,
        dtype=[("len", ">i4"), ("ndim", ">i4"), ("hasnull", ">i4"), ("oid", ">i4"), ("size", ">i4"),
               ("lbound", ">i4"), ("elems", [("elen", ">i4"), ("val", ">f4")], (k,))],
    )
    record["len"] = 20 + 8 * k
    record["ndim"] = 1
    record["hasnull"] = 0
    record["oid"] = _FLOAT4_OID
    record["size"] = k
    record["lbound"] = 1
    record["elems"]["elen"] = 4
    record["elems"]["val"] = arrays
    return Column(name, _expand(_split(record), present))


def _split(record: np.ndarray) -> list[bytes]:
    raw = record.tobytes()
    step = record.dtype.itemsize
    return [raw[i : i + step] for i in range(0, len(raw), step)]


def _expand(fields: list[bytes], present: np.ndarray | None) -> list[bytes]:
    if present is None:
        return fields
    present = np.asarray(present, dtype=bool)
    if int(present.sum()) != len(fields):
        raise ValueError(f"present marks {int(present.sum())} rows but {len(fields)} values were given")
    it = iter(fields)
    return [next(it) if p else _NULL for p in present]


def _rows(columns: Sequence[Column]) -> bytes:
    """The rows of ``columns`` (all of the same length) as COPY data, without header or trailer.

    The fields are interleaved by list slicing and joined once, so each byte is copied once.
    """
    lengths = {len(c.fields) for c in columns}
    if len(lengths) > 1:
        raise ValueError(f"columns have different lengths: { {c.name: len(c.fields) for c in columns} }")
    n, width = (lengths.pop() if lengths else 0), len(columns) + 1
    parts: list[bytes] = [b""] * (n * width)
    parts[0::width] = [len(columns).to_bytes(2, "big")] * n
    for j, column in enumerate(columns, start=1):
        parts[j::width] = column.fields
    return b"".join(parts)


def encode(columns: Sequence[Column]) -> bytes:
    """The whole COPY stream for ``columns`` (all of the same length)."""
    return _SIGNATURE + _rows(columns) + _TRAILER


class _Stream(io.RawIOBase):
    """The COPY stream of successive blocks of rows, encoded by a thread ahead of libpq's reads.

    libpq sends a block (releasing the GIL) while the server stores it, and the encoder thread
    builds the next blocks meanwhile (``_AHEAD`` at most), so the server always has rows waiting.
    Encoding inside ``read`` instead left the server idle while each block was built: a block is
    larger than the socket buffer, so libpq returns only once the server has nearly caught up.
    """

    _AHEAD = 2
    _DONE = object()

    def __init__(self, first: Sequence[Column], rest: Iterator[Sequence[Column]]) -> None:
        self.names = [c.name for c in first]
        self.rows = 0
        self.error: Exception | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=self._AHEAD)
        self._stop = threading.Event()
        self._pending: list[bytes] = [_SIGNATURE]
        self._finished = False
        self._thread = threading.Thread(target=self._encode, args=(first, rest), name="t2c-copy-encode", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _encode(self, first: Sequence[Column], rest: Iterator[Sequence[Column]]) -> None:
        try:
            block: Sequence[Column] | None = first
            while block is not None:
                if [c.name for c in block] != self.names:
                    raise ValueError(f"every block must have the columns {self.names}, got {[c.name for c in block]}")
                if not self._put((_rows(block), len(block[0].fields))):
                    return
                block = next(rest, None)
            self._put(self._DONE)
        except Exception as exc:  # handed to read(): psycopg2 cancels the COPY, copy_blocks raises it as it was
            self._put(exc)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:  # a whole block whatever the size asked: libpq takes any length
        if self._pending:
            return self._pending.pop(0)
        if self._finished:
            return b""
        item = self._queue.get()
        if item is self._DONE:
            self._finished = True
            return _TRAILER
        if isinstance(item, Exception):
            self._finished = True
            self.error = item
            raise item
        data, rows = item
        self.rows += rows
        return data

    def close(self) -> None:
        """Stop the encoder (a COPY the server refused stops reading half way) and wait for it."""
        self._stop.set()
        self._thread.join()
        super().close()


def copy_into(conn: Connection, table: str, columns: Sequence[Column]) -> int:
    """COPY the rows of ``columns`` into ``table`` on ``conn``'s transaction; returns the row count."""
    if not columns:
        raise ValueError("columns must not be empty")
    return copy_blocks(conn, table, [columns])


def copy_blocks(conn: Connection, table: str, blocks: Iterable[Sequence[Column]]) -> int:
    """COPY rows given as successive blocks of columns (the same columns in each) into ``table``
    on ``conn``'s transaction; returns the row count. A generator of blocks is run by an encoder
    thread a few blocks ahead of the server, so Python's work overlaps the server's: it must not
    use ``conn`` (nor anything else that is not thread-safe)."""
    rest = (block for block in blocks if block and len(block[0].fields))
    first = next(rest, None)
    if first is None:
        return 0
    stream = _Stream(first, rest)
    names = ", ".join(f'"{name}"' for name in stream.names)
    statement = f"COPY {table} ({names}) FROM STDIN WITH (FORMAT BINARY)"
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.copy_expert(statement, stream)
    except psycopg2.Error as exc:  # raise what every other store call raises
        if stream.error is not None:  # building a block failed: that is the error to report
            raise stream.error from None
        raise DBAPIError.instance(statement, None, exc, psycopg2.Error) from None
    finally:
        stream.close()
        cursor.close()
    return stream.rows


# ------------------------------------------------------------------------------------------------
# reading: one array column of many rows, by binary COPY, decoded by numpy in one pass

_HEADER_LEN = 19  # signature (11) + flags (4) + header extension length (4, zero)


def read_matrix(conn: Connection, select_sql: str, params: dict[str, Any] | None = None) -> np.ndarray:
    """The rows of a one-column ``SELECT`` of ``real[]`` or ``vector`` values as a float32 matrix.

    Fetching 10^8 floats as Python lists would take minutes; a binary COPY decoded with one numpy
    view takes a fraction of a second. Every row must hold an array of the same length (no NULLs).
    """
    cursor = conn.connection.dbapi_connection.cursor()
    buffer = io.BytesIO()
    try:
        query = cursor.mogrify(select_sql, params or {}).decode()
        cursor.copy_expert(f"COPY ({query}) TO STDOUT WITH (FORMAT BINARY)", buffer)
    except psycopg2.Error as exc:
        raise DBAPIError.instance(select_sql, params, exc, psycopg2.Error) from None
    finally:
        cursor.close()
    raw = buffer.getvalue()
    body = raw[_HEADER_LEN:-2]
    if not body:
        return np.zeros((0, 0), dtype=np.float32)
    fields, length = np.frombuffer(body[:6], dtype=">i2")[0], int(np.frombuffer(body[2:6], dtype=">i4")[0])
    if fields != 1 or length < 0:
        raise ValueError("read_matrix needs a SELECT of exactly one non-NULL array column")
    if length >= 20 and np.frombuffer(body[14:18], dtype=">i4")[0] == _FLOAT4_OID:  # real[]: 5 int32 of header
        width = int(np.frombuffer(body[18:22], dtype=">i4")[0])
        payload = [("hdr", ">i4", (5,)), ("elems", [("elen", ">i4"), ("val", ">f4")], (width,))]
    else:  # vector: int16 dim, int16 unused, float4 values
        width = int(np.frombuffer(body[6:8], dtype=">i2")[0])
        payload = [("dim", ">i2"), ("unused", ">i2"), ("val", ">f4", (width,))]
    record = np.dtype([("fields", ">i2"), ("len", ">i4"), *payload])
    if len(body) % record.itemsize:
        raise ValueError("rows hold arrays of different lengths: select one width at a time")
    rows = np.frombuffer(body, dtype=record)
    if np.any(rows["len"] != length):
        raise ValueError("rows hold arrays of different lengths: select one width at a time")
    values = rows["elems"]["val"] if "elems" in record.names else rows["val"]
    return values.astype(np.float32)
