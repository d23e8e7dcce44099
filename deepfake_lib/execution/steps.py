"""What every stage does around its work, once and in one order: check, then record, then
run. A stage calls :func:`check_stage` before anything else, plans its work, calls
:func:`record_start`, does the work, and calls :func:`record_finish` with its summary."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from deepfake_lib.core import records
from deepfake_lib.core.storage import RunDir
from deepfake_lib.execution.batches import done_batches
from deepfake_lib.execution.connect import init_ray
from deepfake_lib.execution.resources import Resources, check_locations, check_resources


@dataclass(frozen=True)
class BatchPlan:
    """A batch stage's planned batches, the folder whose files mark a batch done, and every
    folder a batch writes (see :func:`deepfake_lib.execution.batches.done_batches`)."""

    planned: list[tuple[str, pa.Table]]
    marker: str
    folders: tuple[str, ...]
    key: str = "video_id"


def check_stage(run: RunDir, stage: str, config: Any, *, inputs: str | None = None,
                locations: Sequence[str | None] = (),
                resources: Sequence[tuple[str, Resources]] = (), use_ray: bool = True) -> None:
    """Before a stage plans or does any work, in this order: join or start Ray (unless the
    stage runs in this process, ``use_ray=False``); refuse local paths (``config.out`` and
    ``locations``) a multi-node cluster would not share, and ``resources`` (``(what,
    Resources)``) it can never give; refuse a run directory made with other settings or from
    other ``inputs`` (unless ``config.overwrite``)."""
    if use_ray:
        init_ray()
        check_locations([config.out, *locations], getattr(config, "shared_fs", False))
        for what, wanted in resources:
            check_resources(what, wanted)
    records.check_settings(run, stage, config, config.overwrite, inputs)


def record_start(run: RunDir, stage: str, config: Any, *, inputs: str | None = None,
                 batches: BatchPlan | None = None) -> set[str]:
    """Once the stage is checked and planned: tidy a batch stage's earlier batches (refusing
    batches this plan would not make), then record the start in ``RUN/<stage>.json``.
    Returns the names of the batches already done."""
    done = set()
    if batches is not None:
        done = done_batches(run, stage, batches.marker, batches.planned, config.overwrite,
                            batches.folders, batches.key)
    records.write(run, stage, config, inputs)
    return done


def record_finish(run: RunDir, stage: str, config: Any, summary: Any,
                  inputs: str | None = None) -> None:
    """Record that the stage finished, with its summary."""
    records.write(run, stage, config, inputs, summary)
