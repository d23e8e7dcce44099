"""The measurements of ``benchmarks/scale.py`` that run in a fresh Python each (``python
benchmarks/scale_child.py --child KIND ARGS``, one JSON line out): the scaled DFDC-layout data
sets, a meter of the CPU time and reads of the driver and Ray's workers, each stage run
through the library, the listing alone, encode on a fake cluster and the cluster stage on
synthetic people. See ``benchmarks/scale.py`` for what each measures.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import resource
import socket
import sys
import tempfile
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED, peak_rss_mb  # noqa: E402
from deepfake_lib.stages import STAGES as REGISTRY  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STAGES = tuple(stage.name for stage in REGISTRY)
FFPP = SHARED / "videos" / "ffpp"
MB = 2**20
PART_SIZE = 2_400          # videos per listed part, as DFDC's 50 parts
FAKES_PER_REAL = 5         # in the listed parts
NODE_BATCH = 2             # videos per encode task on the fake cluster
PREPARE_EVERY = 25
TRAIN_BATCH = 16
SCORE_FRAMES = 8
DFDC_VIDEOS, DFDC_REALS = 119_154, 19_154
SEED_CLUSTERS = 570        # people the seed found in DFDC (18,895 faces)
FACES_PER_PERSON = 33      # 18,895 / 570
CLUSTER_PEOPLE = 40        # synthetic people per 1x for --parts clusters
AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")


# --- data sets ------------------------------------------------------------------------------

def dfdc_name(*key: object) -> str:
    """A DFDC-like video name (ten lowercase letters) derived from ``key``."""
    digest = hashlib.sha1(":".join(map(str, key)).encode()).digest()
    return "".join(chr(ord("a") + b % 26) for b in digest[:10]) + ".mp4"


def ffpp_pairs(pairs: int) -> list[tuple[str, str]]:
    """The first ``pairs`` (original, fake) file names of the shared FF++ videos."""
    metadata = json.loads((FFPP / "metadata.json").read_text())
    found = sorted((entry["original"], name) for name, entry in metadata.items()
                   if entry["label"] == "FAKE")
    return found[:pairs]


def write_copy(folder: Path, k: int, pairs: int, fakes: int) -> None:
    """Part ``k``: each FF++ original and ``fakes`` fakes of it, linked under new names."""
    folder.mkdir(parents=True)
    metadata = {}
    for original, fake in ffpp_pairs(pairs):
        real = dfdc_name(k, original)
        os.symlink(FFPP / original, folder / real)
        metadata[real] = {"label": "REAL", "split": "train", "original": None}
        for j in range(fakes):
            name = dfdc_name(k, fake, j)
            os.symlink(FFPP / fake, folder / name)
            metadata[name] = {"label": "FAKE", "split": "train", "original": real}
    (folder / "metadata.json").write_text(json.dumps(metadata))


def build_scaled(root: Path, size: int, pairs: int, fakes: int) -> Path:
    """``size`` copies of the 1x set, one part each."""
    for k in range(size):
        write_copy(root / f"dfdc_train_part_{k}", k, pairs, fakes)
    return root


def listing_parts(count: int) -> list[list[str]]:
    """Names of ``count`` listed videos in parts of :data:`PART_SIZE`."""
    names = [dfdc_name("listed", i) for i in range(count)]
    return [names[i:i + PART_SIZE] for i in range(0, count, PART_SIZE)]


def listing_metadata(names: list[str]) -> bytes:
    """A part's ``metadata.json``: every sixth video REAL, the next five its fakes."""
    entries, real = {}, None
    for i, name in enumerate(names):
        if i % (FAKES_PER_REAL + 1) == 0:
            real = name
            entries[name] = {"label": "REAL", "split": "train", "original": None}
        else:
            entries[name] = {"label": "FAKE", "split": "train", "original": real}
    return json.dumps(entries).encode()


def write_listing_local(root: Path, count: int) -> Path:
    """``count`` zero-byte videos in DFDC parts under ``root``."""
    for p, names in enumerate(listing_parts(count)):
        part = root / f"dfdc_train_part_{p}"
        part.mkdir(parents=True)
        for name in names:
            (part / name).touch()
        (part / "metadata.json").write_bytes(listing_metadata(names))
    return root


def upload_listing(client, bucket: str, prefix: str, count: int) -> float:
    """The same layout as :func:`write_listing_local` uploaded with boto3; returns seconds."""
    objects = []
    for p, names in enumerate(listing_parts(count)):
        part = f"{prefix}/dfdc_train_part_{p}"
        objects += [(f"{part}/{name}", b"") for name in names]
        objects.append((f"{part}/metadata.json", listing_metadata(names)))
    start = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda o: client.put_object(Bucket=bucket, Key=o[0], Body=o[1]), objects))
    return time.monotonic() - start


def folder_bytes(folder: Path, reals_only: bool = False) -> int:
    """Bytes of the files under ``folder`` (links followed); with ``reals_only``, only the
    videos its parts' metadata labels REAL."""
    if not folder.exists():
        return 0
    total = 0
    for dirpath, _, files in os.walk(folder):
        keep = set(files)
        if reals_only and "metadata.json" in keep:
            meta = json.loads((Path(dirpath) / "metadata.json").read_text())
            keep = {n for n, e in meta.items() if e["label"] == "REAL"}
        total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files if f in keep)
    return total


def stage_input_bytes(stage: str, data: Path, run: Path) -> int:
    """What the stage reads, as files: reals for encode, every video for prepare (the subset
    is every video here) and score, encodings for cluster, crops for train."""
    if stage == "encode":
        return folder_bytes(data, reals_only=True)
    if stage == "cluster":
        return folder_bytes(run / "encodings")
    if stage == "train":
        return folder_bytes(run / "crops")
    return folder_bytes(data)


# --- measuring inside a child ---------------------------------------------------------------

class ProcessMeter:
    """CPU seconds and ``rchar`` bytes of this process and of every process under its raylet
    but Ray's agents, polled in a thread; each process counts from its reading at
    :meth:`start` (0 when it started later) to its last poll. The polling thread's own CPU
    time and reads (of ``/proc``, every process's files at each poll) are not counted."""

    def __init__(self, every_s: float = 0.25):
        self.every_s = every_s
        self.first: dict[int, tuple[float, int]] = {}
        self.last: dict[int, tuple[float, int]] = {}
        self.own: tuple[float, int] = (0.0, 0)  # the polling thread's CPU seconds and reads
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def _processes() -> list:
        import psutil  # noqa: PLC0415

        me = psutil.Process()
        found, pending = [me], []
        for child in me.children():
            if child.name() == "raylet":
                pending += child.children()
        while pending:
            proc = pending.pop()
            try:
                if proc.name() in AGENTS:
                    continue
                pending += proc.children()
            except psutil.Error:
                continue
            found.append(proc)
        return found

    @staticmethod
    def _reading(proc) -> tuple[float, int] | None:
        import psutil  # noqa: PLC0415

        try:
            with proc.oneshot():
                cpu = proc.cpu_times()
                return cpu.user + cpu.system, proc.io_counters().read_chars
        except psutil.Error:
            return None

    def _poll(self, baseline: bool) -> None:
        for proc in self._processes():
            reading = self._reading(proc)
            if reading is not None:
                self.first.setdefault(proc.pid, reading if baseline else (0.0, 0))
                self.last[proc.pid] = reading

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self._poll(baseline=False)
        self.own = (time.thread_time(), read_chars("/proc/thread-self/io"))

    def start(self) -> None:
        self._poll(baseline=True)
        self._thread.start()

    def stop(self) -> tuple[float, int]:
        """(CPU seconds, bytes read) since :meth:`start`."""
        self._stop.set()
        self._thread.join()
        self._poll(baseline=False)
        cpu = sum(self.last[p][0] - self.first[p][0] for p in self.last)
        read = sum(self.last[p][1] - self.first[p][1] for p in self.last)
        return cpu - self.own[0], read - self.own[1]




def run_encode_stage(data: str, run: str) -> dict:
    """Encode with its defaults: units are the reals encoded, tasks its batches."""
    from deepfake_lib.stages.encode import EncodeConfig, run_encode  # noqa: PLC0415

    summary = run_encode(EncodeConfig(data=(data,), out=run, progress_every_s=600))
    return {"units": summary.videos, "tasks": summary.batches, "summary": summary.text()}


def run_cluster_stage(data: str, run: str) -> dict:
    """Cluster, every real kept in the subset: units are faces; it runs in the driver."""
    from deepfake_lib.stages.cluster import ClusterConfig, run_cluster  # noqa: PLC0415

    summary = run_cluster(ClusterConfig(out=run, per_cluster=10**9, include_noise=True))
    return {"units": summary.faces, "tasks": None, "summary": summary.text()}


def run_prepare_stage(data: str, run: str) -> dict:
    """Prepare every 25th frame, no validation split: units are the videos decoded, tasks its
    batches."""
    from deepfake_lib.execution.resources import Resources  # noqa: PLC0415
    from deepfake_lib.stages.prepare import PrepareConfig, run_prepare  # noqa: PLC0415

    # 1.5 GB a task, as the recorded results were measured (prepare's own default is 2.0)
    summary = run_prepare(PrepareConfig(data=(data,), out=run, every=PREPARE_EVERY,
                                        val_fraction=0.0, progress_every_s=600,
                                        tasks=Resources("task", memory_gb=1.5)))
    return {"units": summary.units + summary.fakes, "tasks": summary.batches,
            "crops": sum(summary.crops.values()), "summary": summary.text()}


def run_train_stage(data: str, run: str) -> dict:
    """One epoch of a small model: units are crops, tasks the training steps."""
    from deepfake_lib.core.storage import RunDir  # noqa: PLC0415
    from deepfake_lib.execution.resources import Resources  # noqa: PLC0415
    from deepfake_lib.models.detector import ModelConfig  # noqa: PLC0415
    from deepfake_lib.stages.train import TrainConfig, run_train  # noqa: PLC0415

    model = ModelConfig(encoder="resnet18", encoder_weights="none", image_size=64)
    summary = run_train(TrainConfig(out=run, model=model, workers=Resources("worker", count=1),
                                    epochs=1, batch_size=TRAIN_BATCH))
    folder = RunDir(run)
    samples = sum(row["train_samples"] for row in folder.read_json("model/metrics.json"))
    return {"units": folder.read_parquet("crops", columns=["kind"]).num_rows,
            "tasks": math.ceil(samples / TRAIN_BATCH), "summary": summary.text()}


def run_score_stage(data: str, run: str) -> dict:
    """Score 8 frames a video: units and tasks are the videos (one actor call each), actors
    of one CPU at every size (by default fewer videos than CPUs would get larger ones)."""
    from deepfake_lib.execution.resources import Resources  # noqa: PLC0415
    from deepfake_lib.stages.score import ScoreConfig, run_score  # noqa: PLC0415

    summary = run_score(ScoreConfig(data=(data,), out=run, frames=SCORE_FRAMES, budget_s=120.0,
                                    actors=Resources("actor", cpus=1.0),
                                    progress_every_s=600))
    return {"units": summary.videos, "tasks": summary.videos, "summary": summary.text()}


STAGE_RUNS = {"encode": run_encode_stage, "cluster": run_cluster_stage,
              "prepare": run_prepare_stage, "train": run_train_stage, "score": run_score_stage}

def load_stage(stage: str) -> None:
    """Import the stage's module and, for the batch stages that find faces, load their
    detector (cached per process) and face_recognition's models (one encoding of a blank
    image), as their first task would."""
    from deepfake_lib.media import faces  # noqa: PLC0415
    from deepfake_lib.stages import stage as stage_named  # noqa: PLC0415

    config = stage_named(stage).config
    if hasattr(config, "detector"):
        faces.get_face_detector(config.detector)
        faces.encode_faces(np.zeros((64, 64, 3), np.uint8), [(8, 56, 56, 8)])


def warm_up(stage: str, workers: int) -> None:
    """Import the stage's module here, and :func:`load_stage` in ``workers`` of Ray's workers
    (one CPU each), outside the measurement: a fixed cost per process. Processes the stage
    starts itself (Ray Train's, the scorers) still count theirs."""
    import ray  # noqa: PLC0415

    def load(name: str) -> None:
        load_stage(name)
        time.sleep(1.0)  # held, so that each task lands on another worker

    from deepfake_lib.stages import stage as stage_named  # noqa: PLC0415

    importlib.import_module(stage_named(stage).module)
    ray.get([ray.remote(load).remote(stage) for _ in range(workers)])


def child_stage(data: str, run: str, stage: str, cpus: str) -> None:
    """One stage on a fresh local Ray; prints its measurements as JSON."""
    import ray  # noqa: PLC0415

    ray.init(address="local", num_cpus=int(cpus), log_to_driver=False)
    warm_up(stage, int(cpus))
    meter = ProcessMeter()
    meter.start()
    start = time.monotonic()
    counts = STAGE_RUNS[stage](data, run)
    wall = time.monotonic() - start
    cpu, read = meter.stop()
    result = {"wall_s": wall, "cpu_s": cpu, "read_bytes": read, "peak_rss_mb": peak_rss_mb(),
              **counts}
    ray.shutdown()
    print(json.dumps(result))


def manifest_and_plan(root: str) -> tuple[int, int]:
    """Videos listed and encode batches planned under ``root``."""
    from deepfake_lib.data.dataset import build_manifest  # noqa: PLC0415
    from deepfake_lib.stages.encode import EncodeConfig, plan_batches  # noqa: PLC0415

    manifest = build_manifest(root)
    batches = plan_batches(manifest.table, EncodeConfig((root,), "unused"))
    return manifest.table.num_rows, len(batches)


def child_listing(root: str) -> None:
    """Listing and planning timed, then again under tracemalloc; prints JSON."""
    import deepfake_lib.stages.encode  # noqa: F401, PLC0415 - imports outside the timing

    start = time.monotonic()
    videos, batches = manifest_and_plan(root)
    wall = time.monotonic() - start
    rss = peak_rss_mb()
    tracemalloc.start()
    manifest_and_plan(root)
    print(json.dumps({"videos": videos, "batches": batches, "wall_s": wall, "peak_rss_mb": rss,
                      "python_peak_mb": tracemalloc.get_traced_memory()[1] / MB}))


def free_port() -> int:
    """A free TCP port on loopback (the fake cluster's dashboard: another Ray may hold the
    default one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def task_nodes(address: str, name: str, count: int) -> int:
    """How many nodes ran the finished tasks called ``name`` (task events reach the state
    API a little late: waits up to 30 s for ``count`` of them)."""
    from ray.util.state import list_tasks  # noqa: PLC0415

    deadline = time.monotonic() + 30
    while True:
        done = [t for t in list_tasks(address=address, filters=[("name", "=", name)],
                                      limit=10_000, raise_on_missing_output=False)
                if t.state == "FINISHED"]
        if len(done) >= count or time.monotonic() > deadline:
            return len({t.node_id for t in done})
        time.sleep(1.0)


def child_nodes(data: str, out: str, workers: str) -> None:
    """Encode on a fake cluster of ``workers`` one-CPU nodes; prints JSON."""
    import ray  # noqa: PLC0415
    from ray.cluster_utils import Cluster  # noqa: PLC0415

    from deepfake_lib.stages.encode import EncodeConfig, run_encode  # noqa: PLC0415

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0,
                                                            "dashboard_port": free_port()})
    for _ in range(int(workers)):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        warm_up("encode", int(workers))
        start = time.monotonic()
        summary = run_encode(EncodeConfig(data=(data,), out=out, batch_size=NODE_BATCH,
                                          shared_fs=True, progress_every_s=600))
        wall = time.monotonic() - start
        nodes = task_nodes(cluster.address, "encode_batch", summary.batches)
    finally:
        ray.shutdown()
        cluster.shutdown()
    print(json.dumps({"videos": summary.videos, "tasks": summary.batches, "wall_s": wall,
                      "nodes_used": nodes}))


def child_cluster(out: str, people: str) -> None:
    """The cluster stage on ``people`` synthetic people, after a small run that imports and
    warms what it uses (a fixed cost per process, as the other stages' warm-up); prints JSON."""
    from cluster import write_synthetic_run  # noqa: PLC0415 - benchmarks/cluster.py
    from deepfake_lib.stages.cluster import ClusterConfig, run_cluster  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as warm:
        write_synthetic_run(warm, 20, 10)
        run_cluster(ClusterConfig(out=warm))
    write_synthetic_run(out, int(people), FACES_PER_PERSON)
    before = folder_bytes(Path(out))
    cpu, read = process_cpu_s(), read_chars()
    start = time.monotonic()
    summary = run_cluster(ClusterConfig(out=out))
    wall = time.monotonic() - start
    print(json.dumps({"units": summary.faces, "clusters": summary.clusters, "wall_s": wall,
                      "cpu_s": process_cpu_s() - cpu, "read_bytes": read_chars() - read,
                      "peak_rss_mb": peak_rss_mb(), "out_bytes": folder_bytes(Path(out)) - before}))


def process_cpu_s() -> float:
    """CPU seconds of this process, every thread."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def read_chars(io_file: str = "/proc/self/io") -> int:
    """``rchar`` of this process (or of the thread of ``/proc/thread-self/io``)."""
    line = next(li for li in Path(io_file).read_text().splitlines() if li.startswith("rchar:"))
    return int(line.split()[1])


CHILDREN = {"stage": child_stage, "listing": child_listing, "nodes": child_nodes,
            "cluster": child_cluster}


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        CHILDREN[sys.argv[2]](*sys.argv[3:])
