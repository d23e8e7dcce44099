"""DFDC-layout data sets: find parts, parse ``metadata.json``, build the manifest.

A *part* is a folder that directly holds media files or a ``metadata.json`` (DFDC ships 50
parts, ``dfdc_train_part_0`` .. ``_49``). ``metadata.json`` maps file names to entries::

    {"abc.mp4": {"label": "FAKE", "split": "train", "original": "xyz.mp4"},
     "xyz.mp4": {"label": "REAL", "split": "train", "original": null}}

A folder without ``metadata.json`` is a set of unlabelled media (label null). Image files
(jpg, jpeg, png) are single-frame videos, so a folder of photos goes through the same stages.

Keys of ``metadata.json`` are file names inside their part: a key with a path separator (``/``
or ``\\``), an absolute path, ``.`` or ``..`` is a ``bad_name`` problem and is never opened;
a key that is not a video or image by its extension (``metadata.json`` itself, ``notes.txt``)
is a ``not_media`` problem and no row.

Symbolic links are followed, to files and folders alike, also where they point outside the data
(data folders are often assembled from links); a folder reached twice (two links to it, or a
link loop) is listed once. A broken link to a media file is a row with ``exists`` False and a
``missing_file`` problem, as is a metadata entry whose file is missing, so later stages report
it ``missing``.

The run directory (``exclude``) is never listed when found below a data root: its figures and
thumbnails are not input photos. A data root inside the run directory is listed (the pipeline
writes its built-in sample there).

Nothing here raises on bad data: every oddity (malformed JSON, duplicate keys, unknown labels,
keys that are not file names or not media, entries whose file is missing, broken links, files
the metadata does not list, duplicate video ids, folders or metadata that cannot be read, the
run directory inside the data) becomes a row of :attr:`Manifest.problems` (``video_id`` empty
for a folder's problem) and the manifest keeps every usable video.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs

from deepfake_lib.core import storage
from deepfake_lib.media.video import media_kind

LABELS = frozenset({"REAL", "FAKE"})
METADATA_NAME = "metadata.json"

MANIFEST_SCHEMA = pa.schema([
    ("video_id", pa.string()),   # the file name, as in DFDC's metadata and submission.csv
    ("path", pa.string()),       # local path or URI of the file
    ("part", pa.string()),       # name of the folder that holds it
    ("label", pa.string()),      # REAL, FAKE, or null when unknown
    ("original", pa.string()),   # for a FAKE: the video_id of the REAL it was made from
    ("split", pa.string()),
    ("exists", pa.bool_()),      # False for metadata entries whose file is missing
    ("media", pa.string()),      # video or image
])

PROBLEM_SCHEMA = pa.schema([
    ("part", pa.string()),
    ("video_id", pa.string()),
    ("kind", pa.string()),
    ("message", pa.string()),
])


@dataclass(frozen=True)
class Manifest:
    """Every media file found (``table``, :data:`MANIFEST_SCHEMA`) and what looked wrong
    (``problems``, :data:`PROBLEM_SCHEMA`)."""

    table: pa.Table
    problems: pa.Table

    def summary(self) -> str:
        """One paragraph for people: counts by label and problems by kind."""
        labels = defaultdict(int)
        for label in self.table.column("label").to_pylist():
            labels[label or "unlabelled"] += 1
        parts = len(set(self.table.column("part").to_pylist()))
        text = f"{self.table.num_rows} videos in {parts} parts (" + ", ".join(
            f"{n} {k}" for k, n in sorted(labels.items())) + ")"
        if self.problems.num_rows:
            kinds = defaultdict(int)
            for kind in self.problems.column("kind").to_pylist():
                kinds[kind] += 1
            text += "; problems: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        return text


def is_file_name(name: str) -> bool:
    """True for a plain file name: not empty, not ``.`` or ``..``, no ``/``, ``\\`` or NUL."""
    return name not in ("", ".", "..") and not any(c in name for c in "/\\\0")


def parse_metadata(text: str | bytes) -> tuple[dict[str, dict], list[tuple[str, str, str]]]:
    """Parse a DFDC ``metadata.json``.

    Returns ``(entries, problems)``: entries map a file name to ``{"label", "split",
    "original"}`` (label upper-cased, or None when unknown); problems are ``(video_id, kind,
    message)`` tuples. Malformed JSON gives no entries and one ``malformed_metadata`` problem.
    """
    problems: list[tuple[str, str, str]] = []

    def keep_first(pairs: list[tuple[str, object]]) -> dict:
        out: dict = {}
        for key, value in pairs:
            if key in out:
                problems.append((key, "duplicate_key", f"{key!r} appears more than once; "
                                 "the first entry is used"))
            else:
                out[key] = value
        return out

    try:
        raw = json.loads(text, object_pairs_hook=keep_first)
    except (ValueError, UnicodeDecodeError) as exc:
        return {}, [("", "malformed_metadata", f"not valid JSON: {exc}")]
    if not isinstance(raw, dict):
        return {}, [("", "malformed_metadata", f"expected an object, got {type(raw).__name__}")]

    entries: dict[str, dict] = {}
    for name, entry in raw.items():
        if not is_file_name(name):
            problems.append((name, "bad_name", f"{name!r} is not a file name in this folder "
                             "(keys are names, without a path); ignored"))
            continue
        if not isinstance(entry, dict):
            problems.append((name, "bad_entry", f"entry is {type(entry).__name__}, not an object"))
            entry = {}
        label = entry.get("label")
        if isinstance(label, str) and label.upper() in LABELS:
            label = label.upper()
        else:
            problems.append((name, "unknown_label", f"label {label!r} is not REAL or FAKE; "
                             "treated as unlabelled"))
            label = None
        original = entry.get("original")
        entries[name] = {
            "label": label,
            "split": entry.get("split") if isinstance(entry.get("split"), str) else None,
            "original": original if isinstance(original, str) and label == "FAKE" else None,
        }
    return entries, problems


def _error_kind(exc: OSError) -> str:
    """The problem kind of a folder or file that cannot be read."""
    return "permission" if isinstance(exc, PermissionError) else "unreadable"


def _folder_key(fs: pafs.FileSystem, path: str) -> str:
    """What identifies a folder: its real path on a local disk (links resolved), else its path."""
    return os.path.realpath(path) if isinstance(fs, pafs.LocalFileSystem) else path


def _excluded_keys(root: str, fs: pafs.FileSystem, exclude: Sequence[str]) -> set[str]:
    """The :func:`_folder_key` of each location of ``exclude`` on the file system of ``root``
    (local paths for a local root; URIs of the same scheme for a URI)."""
    if not storage.is_uri(root):
        return {_folder_key(fs, storage.resolve(e)[1]) for e in exclude if not storage.is_uri(e)}
    scheme = root.split("://", 1)[0] + "://"
    return {e[len(scheme):].rstrip("/") for e in exclude if e.startswith(scheme)}


def _broken_links(folder: str) -> list[pafs.FileInfo]:
    """The links in the local ``folder`` whose target does not exist, as ``NotFound`` entries
    (``pyarrow.fs`` leaves them out of a listing)."""
    with os.scandir(folder) as entries:
        return [pafs.FileInfo(entry.path, type=pafs.FileType.NotFound) for entry in entries
                if entry.is_symlink() and not os.path.exists(entry.path)]


def _list_folders(root: str, exclude: Sequence[str] = ()
                  ) -> tuple[dict[str, dict[str, pafs.FileInfo]], list[tuple[str, str, str]]]:
    """Map each folder under ``root`` (itself included) to its direct children by name.

    Also returns the folders not listed, as ``(folder, kind, message)``: ``permission`` or
    ``unreadable`` (listing failed), ``run_directory`` (a location of ``exclude``; nothing
    below it is listed either). Links are followed; a folder reached twice is listed once.
    """
    fs, path = storage.resolve(root)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"data location does not exist: {root}")
    if info.type == pafs.FileType.File:
        raise NotADirectoryError(f"data location is a file, not a folder: {root}")
    excluded = _excluded_keys(root, fs, exclude)
    folders: dict[str, dict[str, pafs.FileInfo]] = {}
    skipped: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    pending = [path]
    while pending:
        folder = pending.pop()
        key = _folder_key(fs, folder)
        if key in seen:
            continue
        seen.add(key)
        if key in excluded:
            skipped.append((folder, "run_directory", "the run directory (--out) is inside the "
                            "data; its outputs are not input, so it is skipped"))
            continue
        try:
            children = fs.get_file_info(pafs.FileSelector(folder))
            if isinstance(fs, pafs.LocalFileSystem):
                children += _broken_links(folder)
        except OSError as exc:
            skipped.append((folder, _error_kind(exc), f"cannot list this folder, skipped: {exc}"))
            continue
        folders[folder] = {posixpath.basename(child.path): child for child in children}
        # depth first in name order, so which of two paths to one folder is listed is stable
        pending += sorted((c.path for c in children if c.type == pafs.FileType.Directory),
                          reverse=True)
    return folders, skipped


def _read_metadata(fs: pafs.FileSystem, path: str
                   ) -> tuple[dict[str, dict], list[tuple[str, str, str]]]:
    """:func:`parse_metadata` of the file at ``path``; one ``permission`` or ``unreadable``
    problem, and no entries, when it cannot be read."""
    try:
        with fs.open_input_stream(path) as f:
            return parse_metadata(f.read())
    except OSError as exc:
        return {}, [("", _error_kind(exc), f"cannot read it: {exc}")]


def _missing_message(folder: str, name: str, info: pafs.FileInfo | None) -> str:
    """Why ``name`` of ``folder`` has no file: not there (``info`` None) or a broken link."""
    if info is None:
        return f"metadata.json of {folder} lists {name}, but the file is not there"
    try:
        target = os.readlink(info.path)
    except OSError:
        target = "nothing"
    return f"{info.path} is a link to {target}, which does not exist"


def _location(root: str, root_path: str, path: str) -> str:
    """The user-facing location of ``path`` (found under ``root`` resolved to ``root_path``)."""
    if not storage.is_uri(root):
        return path
    scheme = root.split("://", 1)[0]
    return f"{scheme}://{path}"


def build_manifest(roots: list[str] | str, exclude: Sequence[str] = ()) -> Manifest:
    """Find every part under ``roots`` (local folders or URIs) and list its media.

    ``exclude`` holds locations never listed (the run directory, ``--out``) when found below a
    root. Raises only when a root itself does not exist or is a file; everything inside becomes
    manifest rows or problems. Rows are sorted by folder, then file name.
    """
    if isinstance(roots, str):
        roots = [roots]
    rows: list[dict] = []
    problems: list[dict] = []
    seen: dict[str, str] = {}
    for root in roots:
        fs, root_path = storage.resolve(root)
        folders, skipped = _list_folders(root, exclude)
        problems += [{"part": posixpath.basename(folder) or folder, "video_id": "", "kind": kind,
                      "message": f"{_location(root, root_path, folder)}: {msg}"}
                     for folder, kind, msg in skipped]
        for folder, children in sorted(folders.items()):
            part = posixpath.basename(folder) or folder
            entries: dict[str, dict] = {}
            if METADATA_NAME in children and children[METADATA_NAME].type == pafs.FileType.File:
                entries, found = _read_metadata(fs, children[METADATA_NAME].path)
                where = _location(root, root_path, children[METADATA_NAME].path)
                problems += [{"part": part, "video_id": vid, "kind": kind,
                              "message": f"{where}: {msg}"} for vid, kind, msg in found]
            media = {name: info for name, info in children.items() if media_kind(name)}
            for name in sorted(set(entries) | set(media)):
                if not media_kind(name):  # a key naming metadata.json itself, a .txt, ...
                    problems.append({"part": part, "video_id": name, "kind": "not_media",
                                     "message": f"metadata.json of {folder} lists {name}, "
                                     "which is not a video or image by its extension; ignored"})
                    continue
                entry = entries.get(name)
                if entry is None:
                    entry = {"label": None, "split": None, "original": None}
                    if METADATA_NAME in children:
                        problems.append({"part": part, "video_id": name, "kind": "not_in_metadata",
                                         "message": f"{name} is in {folder} but not in its "
                                         "metadata.json; treated as unlabelled"})
                exists = name in media and media[name].type != pafs.FileType.NotFound
                if not exists:
                    problems.append({"part": part, "video_id": name, "kind": "missing_file",
                                     "message": _missing_message(folder, name, media.get(name))})
                if name in seen:
                    problems.append({"part": part, "video_id": name, "kind": "duplicate_id",
                                     "message": f"{name} is in both {seen[name]} and {folder}; "
                                     "the first is used"})
                    continue
                seen[name] = folder
                rows.append({
                    "video_id": name,
                    "path": _location(root, root_path, posixpath.join(folder, name)),
                    "part": part,
                    "exists": exists,
                    "media": media_kind(name),
                    **entry,
                })
    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    return Manifest(table=table, problems=pa.Table.from_pylist(problems, schema=PROBLEM_SCHEMA))
