"""Starting or joining Ray, and running a stage, the same way in every job."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from deepfake_lib.checks import FlagParser, above, validate
from deepfake_lib.storage import RunDir

CONNECT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class RayAddress:
    """Where a job finds Ray (None: ``$RAY_ADDRESS``, else a local Ray) and how long it waits
    for an address to answer before it gives up."""

    address: str | None = None
    connect_timeout_s: float = field(default=CONNECT_TIMEOUT_S, metadata=above(0))

    def __post_init__(self) -> None:
        validate(self)


def add_ray_flags(parser: argparse.ArgumentParser) -> None:
    """``--address`` and ``--connect-timeout-s``, as every job that uses Ray takes them."""
    parser.add_argument("--address", default=None,
                        help="Ray address (default: $RAY_ADDRESS or a local Ray)")
    parser.add_argument("--connect-timeout-s", type=float, default=CONNECT_TIMEOUT_S,
                        help="give up on a Ray address that does not answer within this many "
                             "seconds, default %(default)g (allowed: > 0)")


def ray_address(parser: FlagParser, args: argparse.Namespace) -> RayAddress:
    """The job's :class:`RayAddress` from its flags (a bad value: one line, exit code 2)."""
    with parser.checked():
        return RayAddress(args.address, args.connect_timeout_s)


def check_answers(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Raise RuntimeError unless something answers at ``address`` (``host:port`` or
    ``ray://host:port``) within ``timeout_s``: Ray itself would wait for minutes. ``auto``
    and ``local`` are left to Ray."""
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if address in ("auto", "local") or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        where = " (from $RAY_ADDRESS)" if address == os.environ.get("RAY_ADDRESS") else ""
        raise RuntimeError(f"no Ray answers at {address}{where} within {timeout_s:g} s "
                           f"({exc.strerror or type(exc).__name__}): start Ray there, give "
                           "another --address, or unset RAY_ADDRESS for a local Ray") from None


def init_ray(address: str | None = None, num_cpus: int | None = None,
             connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Join the Ray cluster at ``address`` (``auto``, ``ray://host:10001`` or ``host:6379``),
    else ``$RAY_ADDRESS`` or a Ray already running on this machine, else start a local one.
    Does nothing when Ray is already initialised (tests share one instance). Raises
    RuntimeError when the address does not answer within ``connect_timeout_s``."""
    import ray  # noqa: PLC0415 - importing the package must not pull Ray in

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        check_answers(address, connect_timeout_s)
    kwargs = {"log_to_driver": True} if not address else {}
    if num_cpus is not None and not address:
        kwargs["num_cpus"] = num_cpus
    ray.init(address=address, **kwargs)


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


def check_resources(what: str, cpus: float, gpus: float, count: int = 1) -> None:
    """Raise ValueError unless ``count`` units of ``cpus`` CPUs and ``gpus`` GPUs, each on
    one node (an actor, a training worker), can run at once on the Ray cluster: on the nodes
    alive now or on those its autoscaler may add (when that is unknown, nothing is refused).
    Ray itself would wait for them forever."""
    import ray  # noqa: PLC0415

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
    from deepfake_lib import storage  # noqa: PLC0415

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


def _same_place(a: str, b: str) -> bool:
    from deepfake_lib import storage  # noqa: PLC0415

    if storage.is_uri(a) or storage.is_uri(b):
        return a.rstrip("/") == b.rstrip("/")
    return os.path.realpath(a) == os.path.realpath(b)


def check_inputs(config: Any) -> None:
    """Raise ValueError, before anything starts, for a ``--data`` folder that is not there,
    is a file, or is the run directory itself (the run's outputs would be its next inputs)."""
    import pyarrow.fs as pafs  # noqa: PLC0415

    from deepfake_lib import storage  # noqa: PLC0415

    for root in getattr(config, "data", ()):
        if _same_place(root, config.out):
            raise ValueError(f"--out {config.out} is also a --data folder: the run's outputs "
                             "would become its inputs. Use a run directory of its own.")
        fs, path = storage.resolve(root)
        kind = fs.get_file_info(path).type
        if kind == pafs.FileType.NotFound:
            raise ValueError(f"--data {root} does not exist")
        if kind == pafs.FileType.File:
            raise ValueError(f"--data {root} is a file, not a folder of videos")


def run_job(name: str, stage: Callable[[Any], Any], config: Any,
            ray: RayAddress = RayAddress(), use_ray: bool = True) -> int:
    """What every job script does: check that the run directory ``config.out`` can be
    written, join or start Ray (unless the stage runs in this process, ``use_ray=False``), run
    one stage, print its summary. Returns the exit code: 1 when the stage could do nothing (a
    clear error, storage errors included, printed as one line without a traceback, or a
    summary that says nothing succeeded), 130 when interrupted (Ctrl-C), else 0. A stage that
    finished rewrites the report of its run directory (:mod:`deepfake_lib.report`) and prints
    where it is."""
    run = RunDir(config.out)
    try:
        run.check_writable()
        check_inputs(config)
        if use_ray:
            init_ray(ray.address, connect_timeout_s=ray.connect_timeout_s)
        summary = stage(config)
    except KeyboardInterrupt:
        print(f"{name}: interrupted; what was finished is in {run.location}. To resume, "
              f"rerun {_same_command(config)}: finished work is skipped.", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as exc:  # pyarrow's storage errors are OSErrors
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    print(summary.text())
    from deepfake_lib.report import try_write_report  # noqa: PLC0415 - only once a stage is done

    if (report := try_write_report(config.out)) is not None:
        print(f"report: {report}")
    return 0 if summary.succeeded else 1


def _same_command(config: Any) -> str:
    """How to rerun a job without undoing what it finished."""
    if getattr(config, "overwrite", False):
        return "the same command without --overwrite"
    return "the same command"
