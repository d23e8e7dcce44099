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
