"""Running a stage as Ray tasks over deterministic batches, resumably.

A stage cuts its work (an Arrow table, one row per unit of work) into batches named by
position and content. One task per batch writes its outputs atomically, the file in the
stage's *marker* folder last; a batch whose marker exists is done and is skipped by a rerun.
At most ``max_in_flight`` tasks are queued at once, so the driver's memory does not grow with
the number of batches; a batch that fails on every retry is handed to ``on_failure`` (which
records its rows as errors) and the job goes on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa

from deepfake_lib.checks import above, at_least, validate
from deepfake_lib.progress import Progress
from deepfake_lib.storage import RunDir


@dataclass(frozen=True)
class TaskOptions:
    cpus_per_task: float = field(default=1.0, metadata=above(0))
    retries: int = field(default=3, metadata=at_least(0, flag=False))
    # default: twice the cluster's CPUs
    max_in_flight: int | None = field(default=None, metadata=at_least(1, optional=True))
    progress_every_s: float = field(default=10.0, metadata=at_least(0, flag=False))

    def __post_init__(self) -> None:
        validate(self)


def batch_name(index: int, keys: list[str]) -> str:
    """Deterministic name of a batch: its position and a digest of its keys."""
    digest = hashlib.sha1("\n".join(keys).encode()).hexdigest()[:10]
    return f"{index:06d}-{digest}"


def plan(table: pa.Table, batch_size: int, key: str = "video_id") -> list[tuple[str, pa.Table]]:
    """Cut ``table`` (already in its final order) into named batches."""
    return [(batch_name(i, table.slice(start, batch_size).column(key).to_pylist()),
             table.slice(start, batch_size))
            for i, start in enumerate(range(0, table.num_rows, batch_size))]


def done_batches(run: RunDir, marker: str, names: set[str], overwrite: bool,
                 folders: tuple[str, ...]) -> set[str]:
    """Names of batches already done; with ``overwrite``, delete ``folders`` first. Refuses a
    run directory whose marker folder holds batches this plan would not write."""
    if overwrite:
        for folder in folders:
            run.delete(folder)
        return set()
    done = {n.removesuffix(".parquet") for n in run.list(marker, ".parquet")}
    stale = done - names
    if stale:
        raise ValueError(
            f"{run.uri(marker)} holds {len(stale)} batches that this run would not write "
            f"(e.g. {sorted(stale)[0]}): it was made from other inputs or another --batch-size. "
            "Use a new --out, the same inputs and settings, or --overwrite.")
    return done


def failure_rows(video_ids: list[str], stage: str, exc: Exception) -> list[dict]:
    """Error rows (the encode stage's ERROR_SCHEMA) for the videos of a batch whose task
    failed on every retry."""
    message = f"task failed after retries: {type(exc).__name__}: {str(exc)[:500]}"
    return [{"video_id": v, "stage": stage, "kind": "task_failed", "message": message}
            for v in video_ids]


def run_batches(task: Callable[..., dict], batches: list[tuple[str, pa.Table]], args: tuple,
                options: TaskOptions, label: str,
                on_failure: Callable[[str, pa.Table, Exception], dict]) -> None:
    """Run ``task(name, rows, *args)`` as a Ray task per batch. Each returns counts for the
    progress line; ``counts["units"]`` is how many rows it handled."""
    import ray  # noqa: PLC0415

    from deepfake_lib.runtime import cluster_cpus  # noqa: PLC0415

    remote = ray.remote(task).options(num_cpus=options.cpus_per_task,
                                      max_retries=options.retries, retry_exceptions=True)
    max_in_flight = options.max_in_flight or 2 * cluster_cpus()
    progress = Progress(label, sum(rows.num_rows for _, rows in batches),
                        every_s=options.progress_every_s)
    pending: dict = {}  # task reference -> (batch name, rows)
    queue = iter(batches)
    while True:
        while len(pending) < max_in_flight and (item := next(queue, None)) is not None:
            pending[remote.remote(item[0], item[1], *args)] = item
        if not pending:
            break
        [ref], _ = ray.wait(list(pending), num_returns=1)
        name, rows = pending.pop(ref)
        try:
            counts = ray.get(ref)
        except (ray.exceptions.RayError, OSError) as exc:
            counts = on_failure(name, rows, exc)
        counts = dict(counts)
        progress.update(counts.pop("units"), **counts)
    progress.close()
