"""What each stage ran with: its record, ``RUN/<stage>.json``.

A stage writes its record when it starts (``summary`` null) and again when it finishes::

    {"config": {...every setting...}, "settings": {...}, "inputs": "<digest>", "summary": {...}}

``settings`` are the settings that change what the stage writes (every config field but the
run-only ones of :data:`RUN_ONLY`: where the data and the run are, how many workers, ...);
``inputs`` is a digest of what the stage read from the run directory (another stage's
output). A stage asked to add to a run directory made with other settings refuses, unless it
overwrites; the pipeline skips a finished stage only when both still match. A setting
added to the code after a record was written counts there as what earlier versions did
(its default, unless the field says otherwise); one removed from the code still differs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import pyarrow as pa

from deepfake_lib.core.storage import RunDir

# The rows of RUN/errors/ and RUN/prepare_errors/: one per video (or pair, or crop) a stage
# could not use, and why
ERROR_SCHEMA = pa.schema([
    ("video_id", pa.string()),
    ("stage", pa.string()),
    ("kind", pa.string()),           # no_face, or a video.VideoError kind, or "error"
    ("message", pa.string()),
])

# Config fields that say where and how fast, not what: changing them never changes an output.
RUN_ONLY = frozenset({
    "data", "labelled", "out", "overwrite", "videos", "data_name", "shared_fs",
    "tasks", "actors", "workers", "retries", "max_failures", "progress_every_s",
    "start_timeout_s", "video_timeout_s",
})


def settings(config: Any) -> dict:
    """The settings of ``config`` (a stage's dataclass) that change its output, as JSON
    values."""
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
              if f.name not in RUN_ONLY}
    return json.loads(json.dumps(fields, default=lambda o: dataclasses.asdict(o)))


def digest(*parts: object) -> str:
    """A short digest of ``parts`` (strings, bytes, lists of names)."""
    h = hashlib.sha1()
    for part in parts:
        h.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True).encode())
    return h.hexdigest()[:16]


def folder_digest(run: RunDir, folder: str) -> str:
    """A digest of the batch files of ``folder``: their names say their content (see
    :mod:`deepfake_lib.execution.batches`)."""
    return digest(run.list(folder, ".parquet"))


def read(run: RunDir, stage: str) -> dict | None:
    """The stage's record, None when there is none. Raises ValueError naming the file when it
    is damaged: not JSON, or not of the shape :func:`write` gives it."""
    name = f"{stage}.json"
    if not run.exists(name):
        return None
    record = run.read_json(name)
    shapes = {"config": dict, "settings": dict, "inputs": (str, type(None)),
              "summary": (dict, type(None))}
    if not isinstance(record, dict):
        raise run.damaged(name, ValueError(f"a JSON {type(record).__name__}, not an object"))
    for key, shape in shapes.items():
        if not isinstance(record.get(key), shape):
            raise run.damaged(name, ValueError(f"its {key!r} is {type(record.get(key)).__name__}"
                                               ": not a record of this version"))
    return record


UNRECORDED = "unrecorded"


def unrecorded(value: Any) -> dict:
    """Metadata for a config field added after records were first written, whose default is
    not what earlier versions did: ``value`` is what a record without the field stands for."""
    return {UNRECORDED: value}


def _as_unrecorded(value: Any) -> Any:
    """``value`` as JSON, each field of a config in it that has an :func:`unrecorded` value
    at that value."""
    if not dataclasses.is_dataclass(value):
        return json.loads(json.dumps(value, default=lambda o: dataclasses.asdict(o)))
    return {f.name: f.metadata[UNRECORDED] if UNRECORDED in f.metadata
            else _as_unrecorded(getattr(value, f.name)) for f in dataclasses.fields(value)}


def _default_settings(cls: type) -> dict:
    """What a record without a setting stands for, per setting of a config class: the value
    :func:`unrecorded` gives, else the field's default (in a nested config too)."""
    defaults = {}
    for f in dataclasses.fields(cls):
        if f.name in RUN_ONLY:
            continue
        if UNRECORDED in f.metadata:
            defaults[f.name] = f.metadata[UNRECORDED]
        elif f.default is not dataclasses.MISSING:
            defaults[f.name] = _as_unrecorded(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            defaults[f.name] = _as_unrecorded(f.default_factory())
    return defaults


def _with_defaults(recorded: dict, defaults: dict) -> dict:
    """``recorded`` settings with each one they lack at its default, in nested configs too."""
    return {**defaults, **{
        k: _with_defaults(v, defaults[k]) if isinstance(v, dict) and isinstance(
            defaults.get(k), dict) else v for k, v in recorded.items()}}


def _recorded_settings(record: dict, config: Any) -> dict:
    """The settings ``record`` was made with, as ``config``'s class would write them: a
    setting added to the code since then counts as what earlier versions did (its default, or
    its :func:`unrecorded` value), so a run directory made by an earlier version is not redone
    or refused for a setting it never had."""
    return _with_defaults(record.get("settings", {}), _default_settings(type(config)))


def _differences(before: dict, now: dict) -> list[str]:
    return [f"{k}={before.get(k)!r} then, {now.get(k)!r} now"
            for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)]


def check_settings(run: RunDir, stage: str, config: Any, overwrite: bool,
                   inputs: str | None = None) -> None:
    """Raise ValueError when ``RUN`` holds this stage's output made with other settings (or
    from other inputs, when ``inputs`` is given) and ``overwrite`` is false."""
    earlier = read(run, stage)
    if overwrite or earlier is None:
        return
    changed = _differences(_recorded_settings(earlier, config), settings(config))
    if inputs is not None and earlier.get("inputs") != inputs:
        changed.append("other inputs: another model, or another output of the stage before")
    if changed:
        raise ValueError(
            f"{run.uri(stage + '.json')}: the {stage} stage's output there was made with other "
            f"settings ({'; '.join(changed)}). Use the same settings, a new --out, or "
            "--overwrite to redo the stage.")


def write(run: RunDir, stage: str, config: Any, inputs: str | None = None,
          summary: Any = None) -> None:
    """Write the stage's record: at its start without ``summary``, at its end with it."""
    run.write_json(f"{stage}.json", {
        "config": dataclasses.asdict(config), "settings": settings(config), "inputs": inputs,
        "summary": dataclasses.asdict(summary) if summary is not None else None})


def is_finished(run: RunDir, stage: str, config: Any, inputs: str | None = None) -> bool:
    """Whether the stage finished on ``RUN`` with these settings and inputs."""
    earlier = read(run, stage)
    return (earlier is not None and earlier.get("summary") is not None
            and _recorded_settings(earlier, config) == settings(config)
            and earlier.get("inputs") == inputs)
