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
import json
import os
import sys
import tempfile
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import run_child  # noqa: E402
from scale_child import (  # noqa: E402
    CLUSTER_PEOPLE,
    FFPP,
    ROOT,
    SEED_CLUSTERS,
    STAGES,
    build_scaled,
    dfdc_name,
    ffpp_pairs,
    folder_bytes,
    stage_input_bytes,
    upload_listing,
    write_listing_local,
)
from scale_results import (  # noqa: E402
    print_clusters,
    print_listing,
    print_nodes,
    print_plan,
    print_stages,
)

# --- measuring, in the parent ---------------------------------------------------------------

def child_or_error(*args: str) -> dict:
    """``run_child`` of ``scale_child.py``; a failed child is ``{"error": its last line}``."""
    try:
        return run_child(str(Path(__file__).parent / "scale_child.py"), *args)
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
    """The benchmark, or the plan."""
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
