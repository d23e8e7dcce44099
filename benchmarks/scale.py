"""Scale benchmark: how each stage's cost grows with the data, and a capacity plan for DFDC.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scale.py [--sizes 1 4 16] [--repeats 2]
        [--parts stages clusters listing nodes] [--results FILE]
    .venv/bin/python benchmarks/scale.py --plan [--results FILE] [--hours 24]

Measures, into ``--results`` (JSON, default ``runs/scale.json``, written anew by each run: measure
the parts the plan needs, stages and clusters, in one run), then prints:

1. **Stages.** DFDC-layout data sets of growing size (``--sizes``, times the 1x set): each copy
   ``k`` is a part ``dfdc_train_part_k/`` holding the FF++ originals of the shared data (the
   first ``--pairs``) and ``--fakes`` fakes of each (links to its FF++ fake), all under new
   DFDC-like names, with a ``metadata.json`` whose fakes name their original. The five stages
   run in order through the library on one run directory per size and repeat, each stage in a
   fresh Python on a local Ray of ``--cpus`` CPUs; every size ``--repeats`` times, in turn.
   Settings: encode as its defaults (reals only, batches of 8); cluster with every real kept
   in the subset (``per_cluster`` unbounded, noise included: copies of three people would
   otherwise give a subset that does not grow); prepare every 25th frame, with no validation
   split (the copies of three people fall into a few identity clusters, and one cluster more
   or less in validation would change training's share of the crops from size to size);
   train 1 epoch of a ResNet-18 U-Net at 64 px, no pretrained weights, 1 worker, batches of
   16; score 8 frames a video with a 120-s budget (so a loaded machine measures the work, not
   the time limit).

   Per stage: wall seconds of the stage call (Ray already started); CPU seconds and bytes
   read (``rchar`` of ``/proc/PID/io``: every ``read()``, page cache, pipes and sockets
   included) of the driver and of every process under its raylet but Ray's agents (workers,
   actors, Ray Train's processes), each polled every 0.25 s and counted to its last poll;
   the driver's peak RSS; the bytes the run directory grew by; and tasks (batches; training
   steps; one actor call per scored video; cluster runs in the driver). Before the timing,
   the stage's module is imported in the driver and in Ray's workers, with encode's and
   prepare's face models loaded: a fixed cost per process. Processes the stage starts
   (Ray Train's, the scorers) count whole, imports and models included. Exponents (target
   1.0 +- 0.1; driver memory flat within 1.5x): the least-squares slope of log(cost) against
   log(size) of each size's least-CPU repeat, over every size and between the largest two;
   and ``k`` of cost = fixed + b * size^k (fixed >= 0) fitted on every measurement, the
   exponent of the part that grows, since a fixed cost (Ray Train's start, the scorers'
   models) pulls the slope below 1 at small sizes. ``k`` needs more measurements than three
   (four sizes, or repeats): three determine it exactly, noise included. Also a fit of cost
   = fixed + per-x * size.
2. **Clusters.** The copies hold three people, so the cluster stage above is nearly all
   set-up. Here it runs alone on synthetic DFDC-like encodings (``benchmarks/cluster.py``'s)
   of 40 people per 1x with 33 faces each (DFDC: 18,895 faces of 570 people) and 5% strays,
   with the stage's defaults, figures included, after a small warm-up run in the same
   process; wall, CPU, peak RSS (of the process: the warm-up and writing the encodings
   included) and the same exponents. The thumbnails are grey squares, so its bytes written
   are too small: the plan takes the cluster stage's from part 1.
3. **Listing.** ``build_manifest`` and ``encode.plan_batches`` alone over zero-byte .mp4 files
   in parts of 2,400 with a ``metadata.json`` (one REAL, five FAKE of it, as DFDC's ratio
   roughly), at ``--listing`` counts, on the local disk and on a loopback S3 (moto's server,
   filled with boto3, up to ``--s3-max`` videos: moto takes about 200 PUTs/s here). Wall
   seconds and peak RSS of a fresh Python, then the peak of Python's own allocations
   (tracemalloc) in a second pass.
4. **Nodes.** Encode throughput (videos/s) on a fake cluster (``ray.cluster_utils.Cluster``: a
   head with no CPU and one-CPU worker nodes, local paths shared) with two worker nodes and
   with one, in the same run, over ``--nodes-videos`` links to the FF++ originals in batches
   of 2, each node's worker warmed first (module imported, face models loaded). Target: two
   nodes >= 1.6x one. The nodes that ran a batch are read from Ray's state API.
5. **Plan** (``--plan``): from the per-unit costs measured (the slope of cost against units
   over the sizes; the cluster stage's from part 2 when measured), CPU-hours, GPU-hours
   (training; scoring runs on CPU nodes), bytes written, node counts, wall time and spot cost
   for the whole DFDC, on the node types of ``cluster.yaml``. It prints its assumptions.
"""

from __future__ import annotations

import argparse
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
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED, peak_rss_mb, print_table, run_child  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FFPP = SHARED / "videos" / "ffpp"
STAGES = ("encode", "cluster", "prepare", "train", "score")
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

# instance type: (vCPUs, GPUs, GPU model), for the node types of cluster.yaml
INSTANCES = {
    "m5.2xlarge": (8, 0, "-"),
    "c6i.4xlarge": (16, 0, "-"),
    "g5.2xlarge": (8, 1, "A10G"),
}
# where each stage runs on the cluster of cluster.yaml
# Scoring runs on CPU nodes: on an H100, benchmarks/gpu.py measured it only 1.1 to 1.2x faster
# than on the same machine's CPUs (decoding and face tracking stay on the CPU).
STAGE_NODE = {"encode": "cpu", "cluster": "head", "prepare": "cpu", "train": "gpu",
              "score": "cpu"}


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


def quiet_tasks():
    """Task options with the progress lines of a batch stage held back."""
    from deepfake_lib.batches import TaskOptions  # noqa: PLC0415

    return TaskOptions(progress_every_s=600)


def run_encode_stage(data: str, run: str) -> dict:
    """Encode with its defaults: units are the reals encoded, tasks its batches."""
    from deepfake_lib.encode import EncodeConfig, run_encode  # noqa: PLC0415

    summary = run_encode(EncodeConfig(data=(data,), out=run, tasks=quiet_tasks()))
    return {"units": summary.videos, "tasks": summary.batches, "summary": summary.text()}


def run_cluster_stage(data: str, run: str) -> dict:
    """Cluster, every real kept in the subset: units are faces; it runs in the driver."""
    from deepfake_lib.clustering import ClusterConfig, run_cluster  # noqa: PLC0415

    summary = run_cluster(ClusterConfig(out=run, per_cluster=10**9, include_noise=True))
    return {"units": summary.faces, "tasks": None, "summary": summary.text()}


def run_prepare_stage(data: str, run: str) -> dict:
    """Prepare every 25th frame, no validation split: units are the videos decoded, tasks its
    batches."""
    from deepfake_lib.prepare import PrepareConfig, run_prepare  # noqa: PLC0415

    summary = run_prepare(PrepareConfig(data=(data,), out=run, every=PREPARE_EVERY,
                                        val_fraction=0.0, tasks=quiet_tasks()))
    return {"units": summary.units + summary.fakes, "tasks": summary.batches,
            "crops": sum(summary.crops.values()), "summary": summary.text()}


def run_train_stage(data: str, run: str) -> dict:
    """One epoch of a small model: units are crops, tasks the training steps."""
    from deepfake_lib.model import ModelConfig  # noqa: PLC0415
    from deepfake_lib.storage import RunDir  # noqa: PLC0415
    from deepfake_lib.training import TrainConfig, run_train  # noqa: PLC0415

    model = ModelConfig(encoder="resnet18", encoder_weights="none", image_size=64)
    summary = run_train(TrainConfig(out=run, model=model, workers=1, epochs=1,
                                    batch_size=TRAIN_BATCH))
    folder = RunDir(run)
    samples = sum(row["train_samples"] for row in folder.read_json("model/metrics.json"))
    return {"units": folder.read_parquet("crops", columns=["kind"]).num_rows,
            "tasks": math.ceil(samples / TRAIN_BATCH), "summary": summary.text()}


def run_score_stage(data: str, run: str) -> dict:
    """Score 8 frames a video: units and tasks are the videos (one actor call each), actors
    of one CPU at every size (by default fewer videos than CPUs would get larger ones)."""
    from deepfake_lib.scoring import ScoreConfig, run_score  # noqa: PLC0415

    summary = run_score(ScoreConfig(data=(data,), out=run, frames=SCORE_FRAMES, budget_s=120.0,
                                    cpus_per_actor=1.0, progress_every_s=600))
    return {"units": summary.videos, "tasks": summary.videos, "summary": summary.text()}


STAGE_RUNS = {"encode": run_encode_stage, "cluster": run_cluster_stage,
              "prepare": run_prepare_stage, "train": run_train_stage, "score": run_score_stage}
STAGE_MODULES = {"encode": "deepfake_lib.encode", "cluster": "deepfake_lib.clustering",
                 "prepare": "deepfake_lib.prepare", "train": "deepfake_lib.training",
                 "score": "deepfake_lib.scoring"}


def load_stage(stage: str) -> None:
    """Import the stage's module and, for the batch stages that find faces, load their
    detector (cached per process) and face_recognition's models (one encoding of a blank
    image), as their first task would."""
    from deepfake_lib import faces  # noqa: PLC0415

    module = importlib.import_module(STAGE_MODULES[stage])
    config = {"encode": "EncodeConfig", "prepare": "PrepareConfig"}.get(stage)
    if config:
        faces.get_face_detector(getattr(module, config).detector)
        faces.encode_faces(np.zeros((64, 64, 3), np.uint8), [(8, 56, 56, 8)])


def warm_up(stage: str, workers: int) -> None:
    """Import the stage's module here, and :func:`load_stage` in ``workers`` of Ray's workers
    (one CPU each), outside the measurement: a fixed cost per process. Processes the stage
    starts itself (Ray Train's, the scorers) still count theirs."""
    import ray  # noqa: PLC0415

    def load(name: str) -> None:
        load_stage(name)
        time.sleep(1.0)  # held, so that each task lands on another worker

    importlib.import_module(STAGE_MODULES[stage])
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
    from deepfake_lib.dataset import build_manifest  # noqa: PLC0415
    from deepfake_lib.encode import EncodeConfig, plan_batches  # noqa: PLC0415

    manifest = build_manifest(root)
    batches = plan_batches(manifest.table, EncodeConfig((root,), "unused"))
    return manifest.table.num_rows, len(batches)


def child_listing(root: str) -> None:
    """Listing and planning timed, then again under tracemalloc; prints JSON."""
    import deepfake_lib.encode  # noqa: F401, PLC0415 - imports outside the timing

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

    from deepfake_lib.encode import EncodeConfig, run_encode  # noqa: PLC0415

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
                                          shared_fs=True, tasks=quiet_tasks()))
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

    from deepfake_lib.clustering import ClusterConfig, run_cluster  # noqa: PLC0415

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


# --- measuring, in the parent ---------------------------------------------------------------

def child_or_error(*args: str) -> dict:
    """``run_child`` of this script; a failed child is ``{"error": its last line}``."""
    try:
        return run_child(__file__, *args)
    except RuntimeError as exc:
        return {"error": str(exc).strip().splitlines()[-1][:200]}


def measure_stages(work: Path, sizes: list[int], pairs: int, fakes: int, cpus: int,
                   repeats: int) -> list:
    """Each stage at each size, one run directory per size and repeat, one fresh Python per
    stage; the sizes in turn, ``repeats`` times (so that a drift of the machine's speed
    touches every size)."""
    rows = []
    for repeat in range(repeats):
        for size in sizes:
            data = work / f"data_{size}x"
            if not data.exists():
                build_scaled(data, size, pairs, fakes)
            run = work / f"run_{size}x_{repeat}"
            for stage in STAGES:
                before = folder_bytes(run)
                inputs = stage_input_bytes(stage, data, run)
                result = child_or_error("stage", str(data), str(run), stage, str(cpus))
                rows.append({"stage": stage, "size": size, "repeat": repeat,
                             "videos": size * pairs * (1 + fakes), "input_bytes": inputs,
                             "out_bytes": folder_bytes(run) - before, **result})
                done = (f"{result['wall_s']:.1f} s" if "wall_s" in result
                        else f"failed: {result['error']}")
                print(f"scale: {size}x {stage} (repeat {repeat}): {done}", file=sys.stderr,
                      flush=True)
    return rows


def measure_clusters(work: Path, sizes: list[int], repeats: int) -> list:
    """The cluster stage on synthetic DFDC-like encodings of :data:`CLUSTER_PEOPLE` people
    per 1x, :data:`FACES_PER_PERSON` faces each, one fresh Python per size and repeat."""
    rows = []
    for repeat in range(repeats):
        for size in sizes:
            people = CLUSTER_PEOPLE * size
            result = child_or_error("cluster", str(work / f"cluster_{size}x_{repeat}"),
                                    str(people))
            rows.append({"stage": "cluster", "size": size, "repeat": repeat, "people": people,
                         **result})
            done = (f"{result['wall_s']:.1f} s" if "wall_s" in result
                    else f"failed: {result['error']}")
            print(f"scale: cluster of {people} people (repeat {repeat}): {done}",
                  file=sys.stderr, flush=True)
    return rows


def start_s3():
    """moto's S3 server on loopback, its address and test credentials in the environment
    (the children inherit them), and a boto3 client."""
    import logging  # noqa: PLC0415

    import boto3  # noqa: PLC0415
    from moto.server import ThreadedMotoServer  # noqa: PLC0415

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update({"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "test",
                       "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"})
    return server, boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])


def measure_listing(work: Path, counts: list[int], s3_max: int) -> list:
    """Listing and planning at each count, locally, then on S3 up to ``s3_max`` videos."""
    rows = []
    for count in counts:
        root = write_listing_local(work / f"listing_{count}", count)
        rows.append({"where": "local", "count": count, **child_or_error("listing", str(root))})
    s3_counts = [c for c in counts if c <= s3_max]
    if not s3_counts:
        return rows
    server, client = start_s3()
    try:
        client.create_bucket(Bucket="listing")
        for count in s3_counts:
            upload_s = upload_listing(client, "listing", f"n{count}", count)
            rows.append({"where": "s3", "count": count, "upload_s": upload_s,
                         **child_or_error("listing", f"s3://listing/n{count}")})
    finally:
        server.stop()
    return rows


def measure_nodes(work: Path, videos: int) -> list:
    """Encode throughput with 1 and 2 worker nodes over the same videos (fresh outputs)."""
    part = work / "nodes_data" / "dfdc_train_part_0"
    part.mkdir(parents=True)
    originals = [original for original, _ in ffpp_pairs(3)]
    metadata = {}
    for i in range(videos):
        name = dfdc_name("nodes", i)
        os.symlink(FFPP / originals[i % len(originals)], part / name)
        metadata[name] = {"label": "REAL", "split": "train", "original": None}
    (part / "metadata.json").write_text(json.dumps(metadata))
    return [{"workers": n, **child_or_error("nodes", str(part.parent), str(work / f"nodes_{n}"),
                                            str(n))} for n in (1, 2)]


# --- reporting ------------------------------------------------------------------------------

def exponent(sizes: list[float], values: list[float]) -> float | None:
    """Least-squares slope of log(value) against log(size); None without two sizes."""
    if len(set(sizes)) < 2 or min(values) <= 0:
        return None
    return float(np.polyfit(np.log(sizes), np.log(values), 1)[0])


GROWTH_KS = np.arange(0.05, 3.0001, 0.005)


def growth(sizes: list[float], values: list[float]) -> float | None:
    """``k`` of value = fixed + b * size ** k (fixed >= 0, b > 0), by least squares on the
    relative residuals over k in 0.05 to 3: the exponent of the part of the cost that grows,
    with a fixed cost taken out. Fitted on every measurement (repeats included), so it needs
    more of them than its three parameters, over three sizes at least; with exactly three a
    5% error in one of them moves k by about 0.2. None also where it says nothing: the cost
    at the largest size not above the smallest's, a growing part under a tenth of the
    largest cost (a flat cost and its noise), or k at the end of its range."""
    x, y = np.asarray(sizes, float), np.asarray(values, float)
    if len(set(sizes)) < 3 or len(y) <= 3 or y.min() <= 0:
        return None
    if y[x == x.max()].mean() <= y[x == x.min()].mean():
        return None
    best, fit = math.inf, None
    for k in GROWTH_KS:
        columns = np.stack([np.ones_like(x), x**k], axis=1) / y[:, None]
        coef = np.linalg.lstsq(columns, np.ones_like(y), rcond=None)[0]
        if coef[0] < 0:  # no fixed cost: the power law alone
            coef = np.array([0.0, columns[:, 1].sum() / (columns[:, 1] ** 2).sum()])
        if coef[1] <= 0:
            continue
        error = float(((columns @ coef - 1) ** 2).sum())
        if error < best - 1e-12:
            best, fit = error, (float(k), float(coef[0]), float(coef[1]))
    if fit is None or fit[0] in (GROWTH_KS[0], GROWTH_KS[-1]):
        return None
    k, fixed, b = fit
    return k if b * x.max() ** k >= 0.1 * (fixed + b * x.max() ** k) else None


def least(rows: list[dict]) -> list[dict]:
    """One row per (stage, size) of the measurements that did not fail: the repeat with the
    least CPU seconds (the run that anything else on the machine disturbed least)."""
    found: dict[tuple, dict] = {}
    for r in rows:
        if "error" in r:
            continue
        key = (r["stage"], r["size"])
        if key in found and found[key]["units"] != r["units"]:
            raise ValueError(f"{key}: the repeats did different work ({found[key]['units']} "
                             f"and {r['units']} units)")
        if key not in found or r["cpu_s"] < found[key]["cpu_s"]:
            found[key] = r
    return sorted(found.values(), key=lambda r: r["size"])


def every(rows: list[dict], stage: str, key: str) -> tuple[list[float], list[float]]:
    """(sizes, values of ``key``) of every measurement of ``stage`` that did not fail."""
    got = [r for r in rows if r["stage"] == stage and "error" not in r]
    return [r["size"] for r in got], [r[key] for r in got]


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(fixed, per unit) of ys = fixed + per unit * xs by least squares, neither below 0 (a
    slope that is not positive: ys are flat, their mean); with one x, (0, ys / xs)."""
    if len(set(xs)) < 2:
        return 0.0, ys[0] / xs[0] if xs[0] else 0.0
    slope, fixed = np.polyfit(xs, ys, 1)
    if slope <= 0:
        return float(np.mean(ys)), 0.0
    return max(float(fixed), 0.0), float(slope)


def fmt(value: float | None) -> object:
    """A table cell: ``-`` for a value that is not there."""
    return "-" if value is None else value


def print_stages(rows: list[dict]) -> None:
    """The table of every measurement, then the exponents and linear fits per stage."""
    table = []
    for r in rows:
        if "error" in r:
            table.append([r["stage"], f"{r['size']}x", r.get("repeat", 0), r["videos"],
                          *["-"] * 8, f"failed: {r['error']}"])
            continue
        table.append([r["stage"], f"{r['size']}x", r.get("repeat", 0), r["videos"], r["units"],
                      "driver" if r["tasks"] is None else r["tasks"], r["wall_s"], r["cpu_s"],
                      r["read_bytes"] / MB, r["input_bytes"] / MB,
                      r["read_bytes"] / r["input_bytes"] if r["input_bytes"] else "-",
                      r["out_bytes"] / MB, r["peak_rss_mb"]])
    print_table("Stages at each size (units: encode reals, cluster faces, prepare videos "
                "decoded, train crops, score videos)",
                ["stage", "size", "repeat", "videos", "units", "tasks", "wall s", "CPU s",
                 "MB read",
                 "input MB", "read/input", "MB written", "driver peak MB"], table)
    best = least(rows)
    table = []
    for stage in STAGES:
        got = [r for r in best if r["stage"] == stage]
        if not got:
            continue
        sizes = [r["size"] for r in got]
        walls, cpus = [r["wall_s"] for r in got], [r["cpu_s"] for r in got]
        memory = [r["peak_rss_mb"] for r in got]
        reads = [r["read_bytes"] for r in got]
        fixed, per_x = linear_fit(sizes, walls)
        read_per_x = linear_fit(sizes, reads)[1]
        input_per_x = linear_fit(sizes, [r["input_bytes"] for r in got])[1]
        table.append([stage, f"{sizes[0]}x-{sizes[-1]}x", fmt(exponent(sizes, walls)),
                      fmt(exponent(sizes, cpus)), fmt(exponent(sizes[-2:], cpus[-2:])),
                      fmt(growth(*every(rows, stage, "wall_s"))),
                      fmt(growth(*every(rows, stage, "cpu_s"))), fmt(exponent(sizes, reads)),
                      fmt(exponent(sizes, memory)), memory[-1] / memory[0], fixed, per_x,
                      read_per_x / MB, read_per_x / input_per_x if input_per_x else "-"])
    print_table("Exponents (target 1.0 +- 0.1): slope of log(cost) against log(size) of the "
                "least-CPU repeat, over every size and between the largest two; k of cost = "
                "fixed + b * size^k fitted on every measurement (the growing part's exponent; "
                "- where it says nothing, see growth()); driver memory flat, last/first within "
                "1.5x; and wall = fixed + per 1x * size",
                ["stage", "sizes", "wall", "CPU", "CPU, largest 2", "wall k, fixed out",
                 "CPU k, fixed out", "bytes read", "driver memory", "memory last/first",
                 "wall fixed s", "wall s per 1x", "MB read per 1x", "read/input per 1x"], table)


def print_clusters(rows: list[dict]) -> None:
    """The cluster stage on synthetic people: every measurement, then its exponents."""
    table = [[r["size"], r["people"], *(["-"] * 5 + [f"failed: {r['error']}"] if "error" in r
                                        else [r["units"], r["clusters"], r["wall_s"],
                                              r["cpu_s"], r["peak_rss_mb"],
                                              r["out_bytes"] / MB])]
             for r in rows]
    best = least(rows)
    if len(best) >= 2:
        sizes = [r["size"] for r in best]
        costs = ("wall_s", "cpu_s", "peak_rss_mb")
        table.append(["exponent", "-", "-", "-",
                      *(fmt(exponent(sizes, [r[k] for r in best])) for k in costs), "-"])
        table.append(["largest 2", "-", "-", "-",
                      *(fmt(exponent(sizes[-2:], [r[k] for r in best[-2:]])) for k in costs),
                      "-"])
        table.append(["k, fixed out", "-", "-", "-",
                      *(fmt(growth(*every(rows, "cluster", k))) for k in costs), "-"])
    print_table(f"Cluster stage on synthetic DFDC-like encodings ({CLUSTER_PEOPLE} people per "
                f"1x, {FACES_PER_PERSON} faces each and 5% strays, as DFDC's; figures "
                "included; exponents as above)",
                ["size", "people", "faces", "clusters", "wall s", "CPU s", "peak RSS MB",
                 "MB written"], table)


def print_listing(rows: list[dict], s3_max: int) -> None:
    table = [[r["where"], r["count"], *(["-"] * 5 + [f"failed: {r['error']}"] if "error" in r
                                        else [r["videos"], r["batches"], r["wall_s"],
                                              r["peak_rss_mb"], r["python_peak_mb"],
                                              fmt(r.get("upload_s"))])]
             for r in rows]
    for where in ("local", "s3"):
        got = [r for r in rows if r["where"] == where and "error" not in r]
        if len(got) >= 2:
            counts = [r["count"] for r in got]
            table.append([where, "exponent", "-", "-",
                          *(fmt(exponent(counts, [r[k] for r in got]))
                            for k in ("wall_s", "peak_rss_mb", "python_peak_mb")), "-"])
    print_table("Listing and manifest alone (build_manifest + encode.plan_batches), zero-byte "
                f"videos in parts of {PART_SIZE:,}; S3 up to {s3_max:,} (--s3-max)",
                ["where", "listed", "videos", "batches", "wall s", "peak RSS MB",
                 "Python peak MB", "upload s"], table)


def print_nodes(rows: list[dict]) -> None:
    """Encode throughput per number of worker nodes, against one node."""
    one = next((r for r in rows if r["workers"] == 1 and "error" not in r), None)
    table = []
    for r in rows:
        if "error" in r:
            table.append([r["workers"], "-", "-", "-", "-", "-", f"failed: {r['error']}"])
            continue
        rate = r["videos"] / r["wall_s"]
        table.append([r["workers"], r["videos"], r["tasks"], r["nodes_used"], r["wall_s"], rate,
                      rate / (one["videos"] / one["wall_s"]) if one else "-"])
    print_table("Encode over fake cluster nodes (head with no CPU + one-CPU worker nodes; "
                "target: 2 nodes >= 1.6x 1 node)",
                ["worker nodes", "videos", "tasks", "nodes used", "wall s", "videos/s",
                 "x 1 node"], table)


# --- the plan -------------------------------------------------------------------------------

def node_types(path: Path) -> dict[str, dict]:
    """``{"head"|"cpu"|"gpu": {"name", "instance", "vcpus", "gpus", "gpu", "max"}}`` from
    cluster.yaml's ``available_node_types`` and :data:`INSTANCES`."""
    import yaml  # noqa: PLC0415

    config = yaml.safe_load(path.read_text())
    found = {}
    for name, spec in config["available_node_types"].items():
        instance = spec["node_config"]["InstanceType"]
        vcpus, gpus, gpu = INSTANCES[instance]
        role = ("head" if name == config["head_node_type"] else "gpu" if gpus else "cpu")
        found.setdefault(role, {"name": name, "instance": instance, "vcpus": vcpus,
                                "gpus": gpus, "gpu": gpu, "max": spec.get("max_workers", 0)})
    return found


def measured(rows: list[dict], stage: str) -> list[dict]:
    """The stage's measurements that did not fail, refusing to plan without any."""
    got = [r for r in rows if r["stage"] == stage and "error" not in r and r["units"]]
    if not got:
        raise SystemExit(f"scale: no measurement of {stage} in the results: run the stages "
                         "first")
    return got


def per_unit(rows: list[dict], stage: str, key: str) -> tuple[float, float]:
    """(fixed, per unit) of ``key`` against the stage's units over the sizes measured."""
    got = measured(rows, stage)
    return linear_fit([r["units"] for r in got], [r[key] for r in got])


def largest(rows: list[dict], stage: str) -> dict:
    """The stage's measurement at the largest size."""
    return max(measured(rows, stage), key=lambda r: r["size"])


def dfdc_units(rows: list[dict], subset_reals: int, epochs: int) -> dict[str, float]:
    """Each stage's units on the whole DFDC: encode its reals, cluster their faces (as many
    a real as measured), prepare the subset (its reals with DFDC's fakes per real), train the
    subset's crops (as many a video as measured) for ``epochs``, score every video."""
    faces_per_real = largest(rows, "cluster")["units"] / largest(rows, "encode")["units"]
    prepared = subset_reals * DFDC_VIDEOS / DFDC_REALS
    crops_per_video = largest(rows, "train")["units"] / largest(rows, "prepare")["units"]
    return {"encode": DFDC_REALS, "cluster": DFDC_REALS * faces_per_real, "prepare": prepared,
            "train": prepared * crops_per_video * epochs, "score": DFDC_VIDEOS}


def plan_rows(results: dict, a: argparse.Namespace, types: dict) -> list[dict]:
    """Per stage: DFDC units, CPU-hours, GPU-hours (estimate), bytes written, node-hours,
    and whether its CPU time did not grow over the sizes measured (``flat``). Costs are the
    least-CPU repeat's; the cluster stage's CPU time per face from the synthetic people when
    measured (``--parts clusters``; their grey thumbnails make its bytes written too small,
    so those stay the copies'), else from the copies."""
    rows, clusters = least(results["stages"]), least(results.get("clusters", []))
    units = dfdc_units(rows, a.subset_reals, a.epochs)
    plan = []
    for stage in STAGES:
        fixed, cost = per_unit(clusters if stage == "cluster" and clusters else rows, stage,
                               "cpu_s")
        out_fixed, out_cost = per_unit(rows, stage, "out_bytes")
        factor = a.train_factor if stage == "train" else 1.0
        cpu_h = (fixed + cost * units[stage]) / 3600 * factor
        role = STAGE_NODE[stage]
        gpu_h = cpu_h / a.gpu_speedup if role == "gpu" else 0.0
        written_units = units[stage] / a.epochs if stage == "train" else units[stage]
        plan.append({"stage": stage, "units": round(units[stage]), "cpu_h": cpu_h,
                     "gpu_h": gpu_h, "written": out_fixed + out_cost * written_units,
                     "role": role, "flat": cost == 0,
                     "node_h": {"gpu": gpu_h, "head": cpu_h,
                                "cpu": cpu_h / types["cpu"]["vcpus"]}[role]})
    return plan


def schedule(plan: list[dict], hours: float) -> int | None:
    """Nodes per parallel stage so that the run ends in ``hours``: the cluster stage runs
    alone on the head; the others share what is left in proportion to their node-hours, so
    each gets the same number of nodes of its type. None when the head alone takes longer."""
    left = hours - sum(p["node_h"] for p in plan if p["role"] == "head")
    if left <= 0:
        return None
    return max(1, math.ceil(sum(p["node_h"] for p in plan if p["role"] != "head") / left))


def plan_line(p: dict, nodes: int | None, types: dict, price: float | None) -> list:
    """One stage's row of the plan table."""
    count = 1 if p["role"] == "head" else nodes
    shown = fmt(count)
    if count is not None and p["role"] != "head" and count > types[p["role"]]["max"]:
        shown = f"{count} (> max_workers)"
    return [p["stage"] + (" (flat!)" if p["flat"] else ""), p["units"], p["cpu_h"],
            f"{p['gpu_h']:.3g} (estimate)" if p["role"] == "gpu" else "-", p["written"] / 1e9,
            f"{types[p['role']]['instance']} ({p['role']})", p["node_h"], shown,
            p["node_h"] / count if count else None,
            None if price is None else p["node_h"] * price]


def print_plan(results: dict, a: argparse.Namespace) -> None:
    types = node_types(ROOT / "cluster.yaml")
    print_table("Node types of cluster.yaml (instance facts are this script's table)",
                ["role", "node type", "instance", "vCPUs", "GPUs", "max workers"],
                [[role, t["name"], t["instance"], t["vcpus"], f"{t['gpus']} {t['gpu']}",
                  t["max"]] for role, t in types.items()])
    plan = plan_rows(results, a, types)
    nodes = schedule(plan, a.hours)
    price = {"cpu": a.spot_price_cpu, "gpu": a.spot_price_gpu, "head": None}
    table = [plan_line(p, nodes, types, price[p["role"]]) for p in plan]
    table.append(["total", "-", sum(p["cpu_h"] for p in plan),
                  f"{sum(p['gpu_h'] for p in plan):.3g} (estimate)",
                  sum(p["written"] for p in plan) / 1e9, "-", sum(p["node_h"] for p in plan),
                  "-", sum(r[8] or 0.0 for r in table), sum(r[9] or 0.0 for r in table)])
    print_table(f"DFDC capacity plan: {DFDC_VIDEOS:,} videos, a run finished in {a.hours:g} h "
                f"(spot USD per node-hour: CPU {a.spot_price_cpu:g}, GPU {a.spot_price_gpu:g}; "
                "head not counted)",
                ["stage", "DFDC units", "CPU-h", "GPU-h", "GB written", "node type",
                 "node-h", "nodes", "wall h", "USD"], [[fmt(v) for v in r] for r in table])
    print_assumptions(results, a, nodes, [p["stage"] for p in plan if p["flat"]])


def print_assumptions(results: dict, a: argparse.Namespace, nodes: int | None,
                      flat: list[str]) -> None:
    s = results["settings"]
    clusters = least(results.get("clusters", []))
    lines = [
        f"measured on {results['machine']} on {results['date']}, sizes {s['sizes']} "
        f"(1x = {s['pairs']} FF++ originals with {s['fakes']} fake(s) each): per-unit costs "
        "are slopes of CPU seconds (and bytes written) against units over the sizes",
        "CPU-h are CPU seconds of the driver and Ray's workers here; a c6i vCPU is taken as one "
        "such CPU; the three FF++ originals average 466 frames of 0.7 megapixels, a DFDC clip 300 "
        "frames of 1080p (about 1.9x the pixels): decoding-bound stages may cost up to that "
        "much more",
        f"encode: the {DFDC_REALS:,} reals; cluster: in one process on the head, its faces "
        "as many per real as measured, " + (
            "at the cost per face measured on synthetic people ("
            + ", ".join(f"{r['units']:,}" for r in clusters)
            + " faces, --parts clusters)" if clusters else
            "its cost extrapolated linearly from the copies' few faces and three people "
            "(nearly all set-up): measure --parts clusters for a cost per face"),
        f"prepare: the subset the cluster stage picks, assumed {a.subset_reals:,} reals (the "
        f"seed's {SEED_CLUSTERS} people x 3 per person) with "
        f"{(DFDC_VIDEOS - DFDC_REALS) / DFDC_REALS:.2f} fakes each, every {PREPARE_EVERY}th "
        f"frame; the per-video cost was measured with {s['fakes']} fake(s) per original, and "
        "a fake costs less than its original (no tracking), so with DFDC's five this is an "
        "upper bound",
        f"train: {a.epochs} epoch(s) of the measured crops per video, at the cost measured for "
        f"a ResNet-18 U-Net at 64 px on CPU, times --train-factor {a.train_factor:g}",
        f"GPU-h of train are an ESTIMATE: CPU-h / {a.gpu_speedup:g}, an assumed speed-up of "
        "one A10G over one CPU core (an H100 trained 12.7x faster than 16 CPU threads, "
        "benchmarks/gpu.py); score runs on CPU nodes, since a GPU scored a 10-s 1080p video "
        "only 1.1 to 1.2x faster than the same machine's CPUs (decoding and face tracking stay "
        f"on the CPU); scored at {SCORE_FRAMES} frames a video",
        "nodes: the cluster stage alone on the head, then each other stage on that many "
        "nodes of its type (so all finish in the hours asked); node start-up, the head's own "
        "cost and data transfer are not counted" + ("" if nodes is not None else
                                                    "; the cluster stage alone takes longer "
                                                    "than --hours"),
    ]
    if flat:
        lines.append(f"flat!: the CPU time of {', '.join(flat)} did not grow over the sizes "
                     "measured (too small, or too noisy): its plan is only the fixed cost; "
                     "measure larger sizes")
    print("\n" + "\n".join(f"- {line}" for line in lines))


# --- main -----------------------------------------------------------------------------------

def machine() -> str:
    """This machine in words: its processor and CPUs."""
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                  if line.startswith("model name")), "unknown processor")
    return f"{os.cpu_count()} CPUs of {model}"


def measure(a: argparse.Namespace) -> dict:
    """Measure the parts asked for, print their tables, write ``--results``."""
    results = {"date": date.today().isoformat(), "machine": machine(),
               "settings": {"sizes": a.sizes, "repeats": a.repeats, "pairs": a.pairs,
                            "fakes": a.fakes, "cpus": a.cpus, "listing": a.listing,
                            "s3_max": a.s3_max, "nodes_videos": a.nodes_videos},
               "stages": [], "clusters": [], "listing": [], "nodes": []}
    with tempfile.TemporaryDirectory(prefix="bench_scale_", dir=a.work) as tmp:
        work = Path(tmp)
        if "stages" in a.parts:
            results["stages"] = measure_stages(work, a.sizes, a.pairs, a.fakes, a.cpus,
                                               a.repeats)
            print_stages(results["stages"])
        if "clusters" in a.parts:
            results["clusters"] = measure_clusters(work, a.sizes, a.repeats)
            print_clusters(results["clusters"])
        if "listing" in a.parts:
            results["listing"] = measure_listing(work, a.listing, a.s3_max)
            print_listing(results["listing"], a.s3_max)
        if "nodes" in a.parts:
            results["nodes"] = measure_nodes(work, a.nodes_videos)
            print_nodes(results["nodes"])
    a.results.parent.mkdir(parents=True, exist_ok=True)
    a.results.write_text(json.dumps(results, indent=1))
    print(f"\nresults in {a.results}")
    return results


def parse_args() -> argparse.Namespace:
    """The flags (see the module's docstring)."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--repeats", type=int, default=1,
                   help="measure every size this many times: the exponents' slopes take each "
                        "size's least-CPU repeat, k fits them all")
    p.add_argument("--pairs", type=int, default=3, choices=(1, 2, 3),
                   help="FF++ originals (each with its fakes) in the 1x set")
    p.add_argument("--fakes", type=int, default=1, help="fakes per original (links)")
    p.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs of each local Ray")
    p.add_argument("--listing", type=int, nargs="+", default=[7_500, 30_000, 120_000])
    p.add_argument("--s3-max", type=int, default=30_000,
                   help="most listed videos uploaded to the loopback S3")
    p.add_argument("--nodes-videos", type=int, default=24)
    p.add_argument("--parts", nargs="+", default=["stages", "clusters", "listing", "nodes"],
                   choices=("stages", "clusters", "listing", "nodes"), help="what to measure")
    p.add_argument("--work", help="folder for the temporary data sets (default: system temp)")
    p.add_argument("--results", type=Path, default=ROOT / "runs" / "scale.json")
    p.add_argument("--plan", action="store_true",
                   help="print the DFDC plan from --results (measured first if absent)")
    p.add_argument("--hours", type=float, default=24.0, help="the plan's run finishes in N h")
    p.add_argument("--spot-price-cpu", type=float, default=0.30,
                   help="USD per node-hour of the CPU node type")
    p.add_argument("--spot-price-gpu", type=float, default=0.45,
                   help="USD per node-hour of the GPU node type")
    p.add_argument("--subset-reals", type=int, default=SEED_CLUSTERS * 3,
                   help="reals the cluster stage picks on DFDC (prepare's input)")
    p.add_argument("--epochs", type=int, default=5, help="training epochs in the plan")
    p.add_argument("--train-factor", type=float, default=1.0,
                   help="training cost per crop relative to the measured 64-px ResNet-18 "
                        "(e.g. about (224/64)**2 = 12 for the default image size)")
    p.add_argument("--gpu-speedup", type=float, default=20.0,
                   help="assumed speed-up of one GPU over one CPU core for training")
    return p.parse_args()


def main() -> None:
    """A child's measurement (``--child KIND ARGS``), or the benchmark, or the plan."""
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        return CHILDREN[sys.argv[2]](*sys.argv[3:])
    a = parse_args()
    if a.plan and a.results.exists():
        results = json.loads(a.results.read_text())
        if results["stages"]:  # what the plan is built on
            print_stages(results["stages"])
        if results.get("clusters"):
            print_clusters(results["clusters"])
        return print_plan(results, a)
    results = measure(a)
    if a.plan:
        print_plan(results, a)


if __name__ == "__main__":
    main()
