"""What a stage's work asks of the Ray cluster, in one shape for tasks, actors and training
workers, and the checks that refuse what the cluster can never give."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from deepfake_lib.core import storage
from deepfake_lib.core.checks import Number, above, at_least, validate

UNIT_FLAGS = {  # the job flags that set each field, by unit of work
    "task": {"count": "--max-in-flight", "cpus": "--cpus-per-task", "gpus": "--gpus-per-task",
             "memory_gb": "--memory-gb-per-task"},
    "actor": {"count": "--actors", "cpus": "--cpus-per-actor", "gpus": "--gpus-per-actor",
              "memory_gb": "--memory-gb-per-actor"},
    "worker": {"count": "--workers", "cpus": "--cpus-per-worker", "gpus": "--use-gpu",
               "memory_gb": "--memory-gb-per-worker"},
}


@dataclass(frozen=True)
class Resources:
    """What each unit of a stage's work asks Ray for (a ``task`` of a batch stage, a scoring
    ``actor``, a training ``worker``) and how many run at once. ``count`` None: as many as the
    cluster holds (tasks: twice its CPUs in flight); ``cpus`` None: the stage picks (scoring
    actors share the free CPUs); ``memory_gb`` None: Ray's default (no reservation)."""

    unit: str = "task"
    count: int | None = field(default=None, metadata=at_least(1, optional=True))
    cpus: float | None = field(default=1.0, metadata=above(0, optional=True))
    gpus: float = field(default=0.0, metadata=at_least(0))
    memory_gb: float | None = field(default=None, metadata=above(0, optional=True))

    def __post_init__(self) -> None:
        if self.unit not in UNIT_FLAGS:
            raise ValueError(f"unit {self.unit!r}: must be one of {', '.join(UNIT_FLAGS)}")
        try:
            validate(self)
        except ValueError as exc:  # name the job's flag, not the field
            name, _, rest = str(exc).partition(" ")
            field = name.lstrip("-").replace("-", "_")
            raise ValueError(f"{UNIT_FLAGS[self.unit].get(field, name)} {rest}") from None

    def ray_options(self) -> dict:
        """The options Ray's ``.options()`` takes for one unit."""
        options = {"num_cpus": self.cpus if self.cpus is not None else 1.0,
                   "num_gpus": self.gpus}
        if self.memory_gb is not None:
            options["memory"] = int(self.memory_gb * 2**30)
        return options

    @staticmethod
    def flag_rules(unit: str) -> dict[str, Number]:
        """``{argparse dest: rule}`` of the unit's flags, for ``--help`` (see FlagParser)."""
        fields = Resources.__dataclass_fields__
        return {flag.lstrip("-").replace("-", "_"): fields[name].metadata["rule"]
                for name, flag in UNIT_FLAGS[unit].items() if flag != "--use-gpu"}


def cluster_cpus() -> int:
    """CPUs the Ray cluster has now (at least 1)."""
    import ray  # noqa: PLC0415

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


# Written on the head by Ray's cluster launcher (``ray up``), with each node type's resources
# filled in; Ray Tune tells launcher clusters by the same file.
LAUNCHER_CONFIG = "~/ray_bootstrap_config.yaml"


def _units_on(resources: dict, cpus: float, gpus: float, unlimited: int) -> int:
    """How many units of ``cpus`` CPUs and ``gpus`` GPUs fit on a node with ``resources``."""
    fits = [int(resources.get(name, 0) / need + 1e-9) for name, need in (("CPU", cpus),
                                                                         ("GPU", gpus))
            if need > 0]
    return min(fits) if fits else unlimited


def autoscaled_node_types(
        launcher_config: str = LAUNCHER_CONFIG) -> list[tuple[dict, int]] | None:
    """``(resources, most nodes, -1: no limit)`` of each node type the cluster's autoscaler
    may add: ``[]`` when nothing can be added (no autoscaler), None when that is unknown (a
    node type whose resources are not written down). Ray 2.60 has no call for this: its GCS
    record of the autoscaler's config (which Ray Train reads) is left empty by the autoscaler,
    so the launcher's config file on the head is read as well."""
    import yaml  # noqa: PLC0415

    try:
        from ray._private.state import state  # noqa: PLC0415

        config = state.get_cluster_config()
    except Exception:  # noqa: BLE001 - no such record in this Ray
        config = None
    if config is not None and config.node_group_configs:
        return [(dict(g.resources), g.max_count) for g in config.node_group_configs]
    path = os.path.expanduser(launcher_config)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        launcher = yaml.safe_load(f) or {}
    types = launcher.get("available_node_types") or {}
    if not types or any(not t.get("resources") for t in types.values()):
        return None
    most = launcher.get("max_workers", -1)
    return [(t["resources"], t.get("max_workers", most)) for t in types.values()]


def room_for(nodes: list[dict], types: list[tuple[dict, int]], cpus: float, gpus: float,
             count: int) -> int:
    """How many units of ``cpus`` CPUs and ``gpus`` GPUs, each on one node, fit on ``nodes``
    (their resources) and on the nodes of ``types`` an autoscaler may add (capped at
    ``count``, which is all that is asked)."""
    room = sum(_units_on(r, cpus, gpus, count) for r in nodes)
    for resources, most in types:
        room += _units_on(resources, cpus, gpus, count) * (count if most < 0 else most)
    return min(room, count)


def check_resources(what: str, resources: Resources) -> None:
    """Raise ValueError unless ``resources.count`` units (an actor, a training worker), each
    on one node, can run at once on the Ray cluster: on the nodes alive now or on those its
    autoscaler may add (when that is unknown, nothing is refused). Ray itself would wait for
    them forever."""
    import ray  # noqa: PLC0415

    cpus, gpus, count = resources.cpus or 1.0, resources.gpus, resources.count or 1

    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    if room_for(nodes, [], cpus, gpus, count) >= count:
        return
    types = autoscaled_node_types()
    if types is None:
        return
    room = room_for(nodes, types, cpus, gpus, count)
    if room >= count:
        return
    largest = max(nodes, key=lambda r: (r.get("GPU", 0), r.get("CPU", 0)), default={})
    total = ray.cluster_resources()
    raise ValueError(
        f"{what}: {count} x ({cpus:g} CPU, {gpus:g} GPU), each on one node, cannot run on this "
        f"Ray cluster (room for {room}; largest node {largest.get('CPU', 0):g} CPU, "
        f"{largest.get('GPU', 0):g} GPU; in all {total.get('CPU', 0):g} CPU, "
        f"{total.get('GPU', 0):g} GPU; no autoscaler can add more): ask for less, or join "
        "a cluster that has them (--address)")


def local_paths_problem(locations: list[str], nodes: int, may_grow: bool) -> str | None:
    """Why ``locations`` cannot serve a cluster of ``nodes`` nodes (``may_grow``: its
    autoscaler may add some), or None: a local path is a different folder on each node."""
    local = [loc for loc in locations if not storage.is_uri(loc)]
    if not local or (nodes <= 1 and not may_grow):
        return None
    return (f"{local[0]} is a local path, but this Ray cluster has {nodes} nodes"
            f"{' and may add more' if may_grow else ''}: each would read and write its own "
            "disk. Put --data and --out (and --model) on object storage (s3://bucket/prefix), "
            "or pass --shared-fs if every node mounts this path (NFS, a shared volume).")


def check_locations(locations: list[str | None], shared_fs: bool) -> None:
    """Raise ValueError when a local path in ``locations`` would be a different folder on
    each node of the Ray cluster, unless ``shared_fs`` says every node mounts it."""
    import ray  # noqa: PLC0415

    if shared_fs:
        return
    nodes = sum(1 for n in ray.nodes() if n["Alive"])
    types = autoscaled_node_types()
    problem = local_paths_problem([loc for loc in locations if loc], nodes,
                                  types is None or any(most != 0 for _, most in types))
    if problem:
        raise ValueError(problem)


