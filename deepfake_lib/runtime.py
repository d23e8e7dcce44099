"""Starting or joining Ray, and running a stage, the same way in every job."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the Ray cluster at ``address`` (``auto``, ``ray://host:10001`` or ``host:6379``),
    else ``$RAY_ADDRESS`` or a Ray already running on this machine, else start a local one.
    Does nothing when Ray is already initialised (tests share one instance)."""
    import ray  # noqa: PLC0415 - importing the package must not pull Ray in

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    kwargs = {"log_to_driver": True} if not address else {}
    if num_cpus is not None and not address:
        kwargs["num_cpus"] = num_cpus
    ray.init(address=address, **kwargs)


def cluster_cpus() -> int:
    """CPUs the Ray cluster has now (at least 1)."""
    import ray  # noqa: PLC0415

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _units_on(resources: dict, cpus: float, gpus: float, unlimited: int) -> int:
    """How many units of ``cpus`` CPUs and ``gpus`` GPUs fit on a node with ``resources``."""
    fits = [int(resources.get(name, 0) / need + 1e-9) for name, need in (("CPU", cpus),
                                                                         ("GPU", gpus))
            if need > 0]
    return min(fits) if fits else unlimited


def _autoscaled_node_types() -> list[tuple[dict, int]]:
    """``(resources, max nodes)`` of each node type an autoscaler may add (empty without
    one). Ray has no public call for this; Ray Train reads the same record."""
    try:
        from ray._private.state import state  # noqa: PLC0415

        config = state.get_cluster_config()
    except Exception:  # noqa: BLE001 - no record, or another Ray: only the live nodes count
        return []
    if config is None:
        return []
    return [(dict(group.resources), group.max_count) for group in config.node_group_configs]


def check_resources(what: str, cpus: float, gpus: float, count: int = 1) -> None:
    """Raise ValueError unless ``count`` units of ``cpus`` CPUs and ``gpus`` GPUs, each on
    one node (an actor, a training worker), can run at once on the Ray cluster: on the nodes
    alive now or on those its autoscaler may add. Ray itself would wait for them forever."""
    import ray  # noqa: PLC0415

    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    room = sum(_units_on(r, cpus, gpus, count) for r in nodes)
    for resources, most in _autoscaled_node_types():
        room += _units_on(resources, cpus, gpus, count) * (count if most < 0 else most)
    if room >= count:
        return
    largest = max(nodes, key=lambda r: (r.get("GPU", 0), r.get("CPU", 0)), default={})
    total = ray.cluster_resources()
    raise ValueError(
        f"{what}: {count} x ({cpus:g} CPU, {gpus:g} GPU), each on one node, cannot run on this "
        f"Ray cluster (room for {room}; largest node {largest.get('CPU', 0):g} CPU, "
        f"{largest.get('GPU', 0):g} GPU; in all {total.get('CPU', 0):g} CPU, "
        f"{total.get('GPU', 0):g} GPU): ask for less, or join a cluster that has them "
        "(--address)")


def run_job(name: str, stage: Callable[[Any], Any], config: Any, address: str | None = None,
            succeeded: Callable[[Any], bool] = lambda summary: True, use_ray: bool = True) -> int:
    """What every job script does: join or start Ray (unless the stage runs in this process,
    ``use_ray=False``), run one stage, print its summary. Returns the exit code: 1 when the
    stage could do nothing (a clear error, printed without a traceback, or
    ``succeeded(summary)`` false), else 0."""
    if use_ray:
        init_ray(address)
    try:
        summary = stage(config)
    except (ValueError, FileNotFoundError, NotADirectoryError, RuntimeError) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    print(summary.text())
    return 0 if succeeded(summary) else 1
