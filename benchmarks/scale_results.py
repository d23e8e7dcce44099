"""The tables and the DFDC plan of ``benchmarks/scale.py``: each cost's growth exponents from
the measurements, and CPU-hours, GPU-hours, nodes, wall time and spot cost for the whole DFDC
on the node types of ``cluster.yaml``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import print_table  # noqa: E402
from scale_child import (  # noqa: E402
    CLUSTER_PEOPLE,
    DFDC_REALS,
    DFDC_VIDEOS,
    FACES_PER_PERSON,
    MB,
    PART_SIZE,
    PREPARE_EVERY,
    ROOT,
    SCORE_FRAMES,
    SEED_CLUSTERS,
    STAGES,
)

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
        "on the CPU; measured before scoring skipped frames, which sped up the CPU path); "
        f"scored at {SCORE_FRAMES} frames a video",
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
