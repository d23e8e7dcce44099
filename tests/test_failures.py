"""What clusters do: nodes vanish and drivers die. Each scenario runs in a child process with
its own multi-node Ray cluster faked on this machine (``ray.cluster_utils.Cluster``: a head
that runs nothing and two one-CPU worker nodes), since the test session's Ray is one node."""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from deepfake_lib.core.faults import Faults

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[1]


def _in_child(scenario, *args) -> dict:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_main, args=(queue, scenario, args))
    child.start()
    try:
        result = queue.get(timeout=600)
    finally:
        child.join(timeout=60)
    if isinstance(result, BaseException):
        raise result
    return result


def _child_main(queue, scenario, args) -> None:
    import ray

    try:
        queue.put(scenario(*args))
    except BaseException as exc:  # noqa: BLE001 - handed to the parent to raise
        queue.put(RuntimeError(f"{type(exc).__name__}: {exc}"))
    finally:
        ray.shutdown()
        if _CLUSTERS:
            _CLUSTERS.pop().shutdown()


_CLUSTERS: list = []  # the child's fake cluster, shut down when its scenario ends


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cluster():
    import ray
    from ray.cluster_utils import Cluster

    # a dashboard of its own (the session's Ray may hold the default port): the state API
    # that lists task attempts goes through it
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "dashboard_port": _free_port(),
        "env_vars": {"HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}})
    _CLUSTERS.append(cluster)
    nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    return cluster, nodes


def _remove_node_when(cluster, nodes, holding, record: dict,
                      stop: threading.Event) -> threading.Thread:
    """Remove the node of ``nodes`` that ``holding()`` returns, as soon as it returns one
    (polled in a thread until ``stop`` is set, at most 300 s); ``record`` gets the node's id,
    whether one was held, and when it went."""
    def watch():
        deadline = time.monotonic() + 300
        while (held := holding()) is None and not stop.is_set() and time.monotonic() < deadline:
            time.sleep(0.2)
        node = held or nodes[0]
        record.update(node_id=node.node_id, ready=held is not None)
        cluster.remove_node(node)
        record["removed_at"] = time.time()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _attempts(name: str, address: str) -> list[dict]:
    """Every attempt of the Ray tasks called ``name`` (state API), once none is pending or
    running any more (task events reach the state API a little late)."""
    from ray.util.state import list_tasks

    deadline = time.monotonic() + 60
    while True:
        tasks = [{"task_id": t.task_id, "attempt": t.attempt_number, "state": t.state,
                  "node_id": t.node_id, "actor_id": t.actor_id, "error_type": t.error_type}
                 for t in list_tasks(address=address, detail=True, filters=[("name", "=", name)],
                                     limit=10_000, raise_on_missing_output=False)]
        if all(t["state"] in ("FINISHED", "FAILED") for t in tasks) or time.monotonic() > deadline:
            return tasks
        time.sleep(1.0)


def _holding(address: str, nodes, name: str, marker: Path):
    """The node on which the held task called ``name`` runs: once the held video's marker
    names the worker process (:meth:`Faults.maybe_slow`), the node the state API shows that
    process running the task on, else None. The task sleeps there until its node is removed,
    so nothing races the state API's lag."""
    from ray.util.state import list_tasks

    pid = marker.read_text() if marker.exists() else ""
    if not pid:
        return None
    try:
        running = {t.node_id for t in list_tasks(
            address=address, detail=True,
            filters=[("name", "=", name), ("state", "=", "RUNNING"), ("worker_pid", "=", pid)],
            raise_on_missing_output=False)}
    except Exception:  # noqa: BLE001 - the state API not answering yet: ask again
        return None
    held = [n for n in nodes if n.node_id in running]
    return held[0] if len(held) == 1 else None


def _holding_one(data: str, marker: Path) -> Faults:
    """Faults that hold the first video to start (any of ``data``'s) for 300 s, once."""
    videos = tuple(sorted(p.name for p in Path(data).rglob("*.mp4")))
    return Faults(slow_videos=videos, slow_seconds=300.0, slow_once_marker=str(marker))


def _losing_a_node(cluster, nodes, holding, stage, task_name: str) -> tuple[object, dict]:
    """Run ``stage()`` while the node ``holding()`` names is removed; its summary, and what
    happened for :func:`_assert_a_task_died_with_the_node`."""
    record: dict = {}
    stop = threading.Event()  # the stage ended: stop waiting
    watcher = _remove_node_when(cluster, nodes, holding, record, stop)
    began = time.time()
    summary = stage()
    ended = time.time()
    stop.set()
    watcher.join()
    return summary, {"began": began, "ended": ended, **record,
                     "tasks": _attempts(task_name, cluster.address)}


def _assert_a_task_died_with_the_node(result: dict) -> list[dict]:
    """The node went while the stage ran, with work on it; returns the attempts that died.
    An actor's task that died with it has no node: it is on the node where its actor ran."""
    assert result["ready"], "no task was held on a node within 300 s"
    assert result["began"] < result["removed_at"] < result["ended"]
    actor_node = {t["actor_id"]: t["node_id"] for t in result["tasks"]
                  if t["actor_id"] and t["node_id"]}
    died = [t for t in result["tasks"] if t["state"] == "FAILED"
            and (t["node_id"] or actor_node.get(t["actor_id"])) == result["node_id"]]
    assert died, "no task was running on the node when it died"
    return died


def _retried(result: dict) -> set[str]:
    """Tasks that Ray ran again and that then finished."""
    return {t["task_id"] for t in result["tasks"] if t["attempt"] > 0 and t["state"] == "FINISHED"}


def _count(folder: Path) -> int:
    return len(list(folder.glob("*.parquet"))) if folder.exists() else 0


def _encode_losing_a_node(data: str, out: str) -> dict:
    import ray

    from deepfake_lib.stages.encode import EncodeConfig, run_encode

    cluster, nodes = _cluster()
    marker = Path(out).parent / "held"
    summary, result = _losing_a_node(
        cluster, nodes, lambda: _holding(cluster.address, nodes, "encode_batch", marker),
        lambda: run_encode(EncodeConfig(data=(data,), out=out, all_videos=True, batch_size=1,
                                        shared_fs=True), _holding_one(data, marker)),
        "encode_batch")
    return {**result, "videos": summary.videos, "nodes_alive": sum(n["Alive"] for n in ray.nodes())}


def _prepare_losing_a_node(data: str, out: str, reference: str) -> dict:
    from deepfake_lib.stages.prepare import PrepareConfig, run_prepare

    cluster, nodes = _cluster()
    marker = Path(out).parent / "held"
    summary, result = _losing_a_node(
        cluster, nodes, lambda: _holding(cluster.address, nodes, "prepare_batch", marker),
        lambda: run_prepare(PrepareConfig(data=(data,), out=out, batch_size=1, every=12,
                                          shared_fs=True), _holding_one(data, marker)),
        "prepare_batch")
    # the same stage, undisturbed, on the node that is left: what the rows should be
    run_prepare(PrepareConfig(data=(data,), out=reference, batch_size=1, every=12,
                              shared_fs=True))
    return {**result, "errors": summary.errors}


def _score_losing_a_node(data: str, out: str, model: str) -> dict:
    from deepfake_lib.execution.resources import Resources
    from deepfake_lib.stages.score import ScoreConfig, run_score

    cluster, nodes = _cluster()
    marker = Path(out).parent / "held"
    # a budget far longer than the state API takes to show the held call (a loaded machine
    # has taken minutes), shorter than the hold
    summary, result = _losing_a_node(
        cluster, nodes, lambda: _holding(cluster.address, nodes, "VideoScorer.score", marker),
        lambda: run_score(ScoreConfig(data=(data,), out=out, model=model, frames=8,
                                      batch_size=2, actors=Resources("actor", count=2),
                                      budget_s=280.0, shared_fs=True),
                          _holding_one(data, marker)),
        "VideoScorer.score")
    return {**result, "videos": summary.videos, "statuses": summary.statuses}


def _encode_with_the_driver_killed(data: str, killed_out: str, clean_out: str) -> dict:
    cluster, workers = _cluster()
    command = [sys.executable, str(ROOT / "jobs" / "encode.py"), "--data", data, "--all",
               "--batch-size", "1", "--address", cluster.address]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # these local folders are one folder for every node only because the nodes share a machine
    refused = subprocess.run([*command, "--out", killed_out], env=env, capture_output=True,
                             text=True)
    command.append("--shared-fs")
    driver = subprocess.Popen([*command, "--out", killed_out], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while _count(Path(killed_out) / "encodings") < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    written_when_killed = _count(Path(killed_out) / "encodings")
    rerun = subprocess.run([*command, "--out", killed_out], env=env, capture_output=True, text=True)
    clean = subprocess.run([*command, "--out", clean_out], env=env, capture_output=True, text=True)
    return {"workers": sorted(node.node_id for node in workers),
            "refused": refused.returncode, "refused_err": refused.stderr,
            "written_when_killed": written_when_killed, "rerun": rerun.returncode,
            "rerun_out": rerun.stdout, "clean": clean.returncode}


def _exactly_once(ids: list[str], expected: set[str]) -> None:
    assert len(ids) == len(set(ids)), "duplicated rows"
    assert set(ids) == expected, "lost or unexpected rows"


def test_node_lost_during_encode(sample_dir, tmp_path):
    out = tmp_path / "run"
    result = _in_child(_encode_losing_a_node, str(sample_dir), str(out))
    died = _assert_a_task_died_with_the_node(result)
    assert {t["task_id"] for t in died} <= _retried(result)  # Ray ran each again, elsewhere
    assert result["nodes_alive"] == 2  # the head and the surviving worker
    videos = pq.read_table(out / "videos").column("video_id").to_pylist()
    expected = {p.name for p in (sample_dir / "sample_part_0").glob("*.mp4")}
    _exactly_once(videos, expected)
    faces = pq.read_table(out / "encodings").column("video_id").to_pylist()
    _exactly_once(faces, expected)  # one face per sample video
    assert pq.read_table(out / "errors").num_rows == 0


def test_node_lost_during_prepare(sample_dir, tmp_path):
    out, reference = tmp_path / "run", tmp_path / "reference"
    result = _in_child(_prepare_losing_a_node, str(sample_dir), str(out), str(reference))
    died = _assert_a_task_died_with_the_node(result)
    assert {t["task_id"] for t in died} <= _retried(result)
    assert result["errors"] == {}
    crops = pq.read_table(out / "crops", columns=["sample_id", "video_id"]).to_pylist()
    undisturbed = pq.read_table(reference / "crops", columns=["sample_id"]).column("sample_id")
    _exactly_once([c["sample_id"] for c in crops], set(undisturbed.to_pylist()))
    assert {c["video_id"] for c in crops} == {p.name for p in
                                              (sample_dir / "sample_part_0").glob("*.mp4")}


def test_node_lost_during_score(sample_dir, tiny_model, tmp_path):
    out = tmp_path / "run"
    result = _in_child(_score_losing_a_node, str(sample_dir), str(out), str(tiny_model))
    # the node went mid-stage while its actor was scoring the held video
    died = _assert_a_task_died_with_the_node(result)
    assert len(died) == 1 and died[0]["actor_id"]
    # that video was scored again by another actor: 16 answers in all, none a fallback
    assert result["videos"] == 16 and result["statuses"] == {"ok": 16}, result
    names = [line.split(",")[0] for line in (out / "submission.csv").read_text().splitlines()[1:]]
    _exactly_once(names, {p.name for p in (sample_dir / "sample_part_0").glob("*.mp4")})


def test_killed_driver_then_rerun_equals_an_uninterrupted_run(sample_dir, tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    result = _in_child(_encode_with_the_driver_killed, str(sample_dir), str(killed), str(clean))
    # a local --out on a three-node cluster is refused before any work, without --shared-fs
    assert result["refused"] == 1 and "3 nodes" in result["refused_err"]
    assert "s3://" in result["refused_err"] and "--shared-fs" in result["refused_err"]
    assert result["rerun"] == 0 and result["clean"] == 0
    assert 3 <= result["written_when_killed"] < 16  # it really died in the middle
    skipped = int(re.search(r"\((\d+) already done\)", result["rerun_out"]).group(1))
    assert skipped >= result["written_when_killed"]  # the rerun resumed, it did not restart
    columns = ["video_id", "face_index", "frame_index", "top", "right", "bottom", "left",
               "encoding"]
    after = pq.read_table(killed / "encodings", columns=columns).sort_by("video_id").to_pylist()
    reference = pq.read_table(clean / "encodings", columns=columns).sort_by("video_id").to_pylist()
    assert after == reference
    assert sorted(p.name for p in (killed / "encodings").glob("*.parquet")) == \
        sorted(p.name for p in (clean / "encodings").glob("*.parquet"))
    # the tasks ran on every worker node (the head has no CPU), as each batch records
    nodes = pq.read_table(clean / "videos", columns=["node"]).column("node").to_pylist()
    assert sorted(set(nodes)) == result["workers"]
