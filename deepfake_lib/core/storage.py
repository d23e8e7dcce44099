"""Run directories and input locations on a local disk or S3, through ``pyarrow.fs``.

A location is a string: a local path (relative or absolute) or a URI such as
``s3://bucket/prefix``. Paths inside a :class:`RunDir` are relative, ``/``-separated.

Writes are atomic: locally a file is written under a temporary name in the same folder and
renamed; on S3 an object becomes visible only when its upload completes, so one PUT is atomic.
A retried task that rewrites the same name therefore replaces the file instead of duplicating
it, and a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import posixpath
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq


def is_uri(location: str) -> bool:
    """True for ``scheme://...`` locations (S3, GCS, ...), False for local paths."""
    return "://" in location and not location.startswith("file://")


def resolve(location: str) -> tuple[pafs.FileSystem, str]:
    """Return ``(filesystem, path)`` for a local path or URI.

    Local paths become absolute so that Ray workers started elsewhere agree on them.
    S3 endpoints can be redirected (MinIO, moto) with the ``AWS_ENDPOINT_URL`` variable.
    """
    if is_uri(location):
        if location.startswith("s3://") and os.environ.get("AWS_ENDPOINT_URL"):
            fs = pafs.S3FileSystem(
                endpoint_override=os.environ["AWS_ENDPOINT_URL"],
                region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
            )
            return fs, location[len("s3://"):].rstrip("/")
        fs, path = pafs.FileSystem.from_uri(location)
        return fs, path.rstrip("/")
    if location.startswith("file://"):
        location = location[len("file://"):]
    return pafs.LocalFileSystem(), os.path.abspath(location)


def join(location: str, *parts: str) -> str:
    """Join a location and relative parts with ``/`` (also for local paths)."""
    if not is_uri(location):
        return os.path.join(location, *parts)
    return posixpath.join(location.rstrip("/"), *parts)


def exists(location: str) -> bool:
    fs, path = resolve(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def read_bytes(location: str) -> bytes:
    fs, path = resolve(location)
    with fs.open_input_stream(path) as f:
        return f.read()


def write_bytes_atomic(location: str, data: bytes) -> None:
    """Write ``data`` to ``location`` so that readers see the old file or the new, never a part.
    Locally the data goes to a temporary file of a short name of its own beside it (a name
    made longer than the final one could pass the file system's limit), then is renamed."""
    fs, path = resolve(location)
    parent = posixpath.dirname(path) if is_uri(location) else os.path.dirname(path)
    fs.create_dir(parent, recursive=True)
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = os.path.join(parent, f".tmp-{uuid.uuid4().hex}")
        try:
            with fs.open_output_stream(tmp) as f:
                f.write(data)
            fs.move(tmp, path)
        finally:
            if fs.get_file_info(tmp).type != pafs.FileType.NotFound:
                fs.delete_file(tmp)
    else:
        with fs.open_output_stream(path) as f:
            f.write(data)


@contextlib.contextmanager
def local_copy(location: str) -> Iterator[str]:
    """Yield a local file path for ``location``: the path itself, or a temporary download."""
    if not is_uri(location):
        yield location
        return
    suffix = posixpath.splitext(location)[1]
    with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
        tmp.write(read_bytes(location))
        tmp.flush()
        yield tmp.name


class RunDir:
    """The run directory every stage reads from and writes to (``--out``).

    Picklable (it holds only the location string), so it can be passed to Ray tasks.
    """

    def __init__(self, location: str):
        self.location = location if is_uri(location) else os.path.abspath(location)

    def __repr__(self) -> str:
        return f"RunDir({self.location!r})"

    def uri(self, rel: str = "") -> str:
        """The full location of ``rel`` inside the run directory."""
        return join(self.location, rel) if rel else self.location

    def exists(self, rel: str) -> bool:
        return exists(self.uri(rel))

    def list(self, rel: str, suffix: str = "") -> list[str]:
        """Names (not paths) of the files directly in folder ``rel`` ending with ``suffix``,
        sorted; temporary files of writes in progress are left out. Empty if ``rel`` is absent."""
        fs, path = resolve(self.uri(rel))
        if fs.get_file_info(path).type != pafs.FileType.Directory:
            return []
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=False))
        names = (posixpath.basename(i.path) for i in infos if i.type == pafs.FileType.File)
        return sorted(n for n in names if n.endswith(suffix) and ".tmp-" not in n)

    def write_bytes(self, rel: str, data: bytes) -> None:
        write_bytes_atomic(self.uri(rel), data)

    def read_bytes(self, rel: str) -> bytes:
        return read_bytes(self.uri(rel))

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())

    def read_json(self, rel: str) -> Any:
        """The JSON of ``rel``; ValueError naming it when it is damaged (not JSON)."""
        try:
            return json.loads(self.read_bytes(rel))
        except (ValueError, UnicodeDecodeError) as exc:
            raise self.damaged(rel, exc) from None

    def write_parquet(self, rel: str, table: pa.Table, row_group_size: int | None = None,
                      group_by: str | None = None) -> None:
        """Write one Parquet file atomically (serialised in memory, then one write), in row
        groups of at most ``row_group_size`` rows (Arrow's default: one per million). With
        ``group_by`` (a column of strings or integers), rows with the same value of it are
        written together, in row groups of their own, by sorted value (nulls last) and
        otherwise in their order, so a reader that wants one value reads no row of another."""
        buf = io.BytesIO()
        if group_by is None:
            pq.write_table(table, buf, compression="zstd", row_group_size=row_group_size)
        else:
            rows: dict = {}
            for i, value in enumerate(table.column(group_by).to_pylist()):
                rows.setdefault(value, []).append(i)
            with pq.ParquetWriter(buf, table.schema, compression="zstd") as writer:
                values = sorted(v for v in rows if v is not None) + [None] * (None in rows)
                for value in values:
                    writer.write_table(table.take(rows[value]), row_group_size=row_group_size)
        self.write_bytes(rel, buf.getvalue())

    def damaged(self, rel: str, exc: Exception) -> ValueError:
        """The error for a file of the run directory that cannot be read as what it should
        be: it names the file and how to recover."""
        return ValueError(f"{self.uri(rel)} is damaged ({' '.join(str(exc).split())[:200]}): "
                          "delete it to redo what it holds, or rerun with --overwrite")

    def parquet_file(self, rel: str) -> pq.ParquetFile:
        """One Parquet file opened for reading parts of it (row groups, columns). Raises
        ValueError naming it when it is damaged."""
        fs, path = resolve(self.uri(rel))
        try:
            return pq.ParquetFile(fs.open_input_file(path))
        except (pa.ArrowInvalid, OSError) as exc:
            if fs.get_file_info(path).type != pafs.FileType.File:
                raise
            raise self.damaged(rel, exc) from None

    def read_parquet(self, rel: str, columns: list[str] | None = None) -> pa.Table:
        """Read one Parquet file, or every ``*.parquet`` file of folder ``rel`` in name order.

        Raises ``FileNotFoundError`` when there is nothing to read, ValueError naming a file
        that is damaged (not Parquet, cut short, or without the columns asked for).
        """
        fs, path = resolve(self.uri(rel))
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.File:
            return self._read_one(rel, columns)
        names = self.list(rel, ".parquet")
        if not names:
            raise FileNotFoundError(f"no Parquet files at {self.uri(rel)}")
        tables = [self._read_one(f"{rel}/{n}", columns) for n in names]
        try:
            return pa.concat_tables(tables, promote_options="default")
        except pa.ArrowInvalid as exc:  # a part of another schema
            raise ValueError(f"the Parquet files of {self.uri(rel)} do not agree ({exc}): one "
                             "is from another version; rerun with --overwrite") from None

    def _read_one(self, rel: str, columns: list[str] | None) -> pa.Table:
        fs, path = resolve(self.uri(rel))
        try:
            return pq.read_table(path, filesystem=fs, columns=columns)
        except (pa.ArrowInvalid, pa.ArrowKeyError, OSError) as exc:  # OSError: bad pages too
            if fs.get_file_info(path).type != pafs.FileType.File:
                raise
            raise self.damaged(rel, exc) from None

    def check_writable(self) -> None:
        """Write and delete a small file, so that a run directory that cannot be written (no
        such bucket, a file in the way, a read-only disk, storage that does not answer) fails
        with one OSError naming it before any work starts."""
        probe = f".write-probe-{uuid.uuid4().hex}"
        try:
            self.write_bytes(probe, b"")
            self.delete(probe)
        except OSError as exc:
            raise OSError(f"cannot write to the run directory {self.location}: {exc}") from None

    def delete(self, rel: str) -> None:
        """Delete a file or a folder (recursively); nothing if absent."""
        fs, path = resolve(self.uri(rel))
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.Directory:
            fs.delete_dir(path)
        elif info.type == pafs.FileType.File:
            fs.delete_file(path)
