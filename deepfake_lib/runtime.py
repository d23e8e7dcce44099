"""Starting or joining Ray the same way in every stage."""

from __future__ import annotations

import os


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
