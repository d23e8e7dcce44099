"""Running a stage as Ray tasks over deterministic batches, resumably.

A stage cuts its work (an Arrow table, one row per unit of work) into batches named by
their content. One task per batch writes its outputs atomically, the file in the
stage's *marker* folder last; a batch whose marker exists is done and is skipped by a rerun.
At most ``max_in_flight`` tasks are queued at once, so the driver's memory does not grow with
the number of batches; a batch that fails on every retry is handed to ``on_failure`` (which
records its rows as errors) and the job goes on.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from typing import TypeVar

import pyarrow as pa

from deepfake_lib.core.progress import Progress
from deepfake_lib.core.storage import RunDir
from deepfake_lib.execution.resources import Resources, cluster_cpus


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "big")


def _cut_points(keys: list[str], weights: list[int], batch_size: int) -> list[int]:
    """Where to end batches over ``keys`` (in their final order), chosen by the keys
    themselves (content-defined chunking): a batch ends after a key whose digest falls in a
    1-in-k bucket once it weighs at least half of ``batch_size``, and once it weighs twice
    ``batch_size`` at the latest, so batches weigh about ``batch_size`` (a row weighs 1, or
    its ``weights`` entry). A key added or removed changes the batch it falls in (now and
    then the next few too), never the rest."""
    least = (batch_size + 1) // 2
    every = batch_size - least + 1
    cuts, load = [], 0
    for i, (key, weight) in enumerate(zip(keys, weights)):
        load += weight
        if load >= 2 * batch_size or (load >= least and _digest(key) % every == 0):
            cuts.append(i + 1)
            load = 0
    if load:
        cuts.append(len(keys))
    return cuts


def batch_name(keys: list[str]) -> str:
    """The name of the batch of ``keys``: a digest of its content, not of its position."""
    return hashlib.sha1("\n".join(keys).encode()).hexdigest()[:16]


def plan(table: pa.Table, batch_size: int, key: str = "video_id", group: str | None = None,
         content: tuple[str, ...] = (), weight: str | None = None) -> list[tuple[str, pa.Table]]:
    """Cut ``table`` (already in its final order) into named batches of about ``batch_size``
    rows (or of that much ``weight``, a column of row weights), never across a change of
    ``group`` (e.g. a DFDC part). A batch's name is a digest of its rows' ``key`` and
    ``content`` columns, so data that grows part by part makes new batches and leaves the
    names of the others as they were (see :func:`_cut_points`)."""
    columns = [key, *content]
    rows = [":".join(str(v) for v in values)
            for values in zip(*(table.column(c).to_pylist() for c in columns))]
    weights = table.column(weight).to_pylist() if weight else [1] * table.num_rows
    groups = table.column(group).to_pylist() if group else [None] * table.num_rows
    planned, start = [], 0
    while start < table.num_rows:
        end = start + 1
        while end < table.num_rows and groups[end] == groups[start]:
            end += 1
        begin = start
        for cut in _cut_points(rows[start:end], weights[start:end], batch_size):
            planned.append((batch_name(rows[begin:start + cut]),
                            table.slice(begin, start + cut - begin)))
            begin = start + cut
        start = end
    return planned


def done_batches(run: RunDir, stage: str, marker: str, planned: list[tuple[str, pa.Table]],
                 overwrite: bool, folders: tuple[str, ...], key: str = "video_id") -> set[str]:
    """Names of the planned batches already done, after tidying the run directory.

    With ``overwrite``, ``folders`` are deleted first. Otherwise an earlier batch this plan
    would not write (finished, or failed and recorded) is *superseded* when every one of its
    videos is in the plan (the data grew, or a video's unit of work changed): its files are
    deleted and the videos are redone in their new batch. An earlier batch holding videos the
    plan does not have is refused: the run directory was made from other inputs.
    ``RUN/plans/<stage>.parquet`` records which videos each planned batch holds, for the next
    run to tell the two apart."""
    record = f"plans/{stage}.parquet"
    if overwrite:
        for folder in (*folders, record):
            run.delete(folder)
    ids_of: dict[str, set[str]] = {}
    if run.exists(record):
        for row in run.read_parquet(record).to_pylist():
            ids_of.setdefault(row["batch"], set()).add(row["video_id"])
    done = {n.removesuffix(".parquet") for n in run.list(marker, ".parquet")}
    present = {n.removesuffix(".parquet") for f in folders for n in run.list(f, ".parquet")}
    names = {name for name, _ in planned}
    stale = (done | (present & ids_of.keys())) - names
    if stale:
        planned_ids = {v for _, rows in planned for v in rows.column(key).to_pylist()}
        unknown = sorted(stale - ids_of.keys())
        gone = sorted({v for n in stale for v in ids_of.get(n, ())} - planned_ids)
        if gone or unknown:
            example = f"video {gone[0]}" if gone else f"batch {unknown[0]}, of no recorded plan"
            raise ValueError(
                f"{run.uri(marker)} holds results this run would not make (e.g. {example}): "
                "it was made from other inputs. Use a new --out, the same inputs, or "
                "--overwrite to redo the stage.")
        for name in stale:
            for folder in folders:
                run.delete(f"{folder}/{name}.parquet")
    run.write_parquet(record, pa.Table.from_pylist(
        [{"batch": name, "video_id": v} for name, rows in planned
         for v in rows.column(key).to_pylist()],
        pa.schema([("batch", pa.string()), ("video_id", pa.string())])))
    return done - stale


T = TypeVar("T")


def current_node() -> str:
    """The id of the Ray node this code runs on ("" outside Ray): batches record it."""
    import ray  # noqa: PLC0415

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


def call_within(seconds: float, call: Callable[[], T]) -> T:
    """``call()``'s result (or its exception), or ``TimeoutError`` once ``seconds`` have
    passed. The call runs in a daemon thread that is left behind on a timeout: a decode stuck
    in native code cannot be interrupted, and one stuck video must not stall its batch (the
    thread ends with the worker process at the latest)."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"gave up after {seconds:g} s (the per-video time limit, "
                           "--video-timeout-s)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def failure_rows(video_ids: list[str], stage: str, exc: Exception) -> list[dict]:
    """Error rows (:data:`deepfake_lib.core.records.ERROR_SCHEMA`) for the videos of a batch
    whose task failed on every retry."""
    message = f"task failed after retries: {type(exc).__name__}: {str(exc)[:500]}"
    return [{"video_id": v, "stage": stage, "kind": "task_failed", "message": message}
            for v in video_ids]


def pending(run: RunDir, marker: str, planned: list[tuple[str, pa.Table]], overwrite: bool
            ) -> list[tuple[str, pa.Table]]:
    """What :func:`done_batches` will leave to do, without tidying anything: every planned
    batch with ``overwrite``, else those whose file in ``marker`` is not written yet."""
    done = set() if overwrite else {n.removesuffix(".parquet")
                                    for n in run.list(marker, ".parquet")}
    return [(name, rows) for name, rows in planned if name not in done]


def run_batches(task: Callable[..., dict], batches: list[tuple[str, pa.Table]], args: tuple,
                tasks: Resources, retries: int, label: str,
                on_failure: Callable[[str, pa.Table, Exception], dict],
                progress_every_s: float = 10.0) -> None:
    """Run ``task(name, rows, *args)`` as a Ray task per batch, at most ``tasks.count`` at
    once (default: twice the cluster's CPUs), each retried ``retries`` times before
    ``on_failure(name, rows, exception)`` records it. Each returns counts for the progress
    line; ``counts["units"]`` is how many rows it handled."""
    import ray  # noqa: PLC0415

    if not batches:  # nothing to do: no progress line either
        return
    remote = ray.remote(task).options(**tasks.ray_options(), max_retries=retries,
                                      retry_exceptions=True)
    max_in_flight = tasks.count or 2 * cluster_cpus()
    progress = Progress(label, sum(rows.num_rows for _, rows in batches),
                        every_s=progress_every_s)
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
