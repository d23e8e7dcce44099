"""Joining or starting Ray, the same way in every job, quietly unless asked."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from deepfake_lib.core.checks import above, validate

CONNECT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class RayConnection:
    """How a job reaches Ray: where (None: ``$RAY_ADDRESS``, else a local Ray), how long it
    waits for an address to answer before it gives up, and whether Ray's own logs are shown."""

    address: str | None = None
    connect_timeout_s: float = field(default=CONNECT_TIMEOUT_S, metadata=above(0))
    verbose: bool = False

    def __post_init__(self) -> None:
        validate(self)


_verbose = False


def verbose() -> bool:
    """Whether this job asked for Ray's own logs (``--verbose``): workers' output, Ray's and
    Ray Train's internal lines."""
    return _verbose


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


def init_ray(connection: RayConnection = RayConnection(), num_cpus: int | None = None) -> None:
    """Join the Ray cluster at ``connection.address`` (``auto``, ``ray://host:10001`` or
    ``host:6379``), else ``$RAY_ADDRESS`` or a Ray already running on this machine, else start
    a local one. Does nothing when Ray is already initialised (tests share one instance).
    Without ``verbose``, workers' output and Ray's own lines stay in Ray's log files (the
    stages send their lines to the driver themselves). Raises RuntimeError when the address
    does not answer within ``connect_timeout_s``."""
    import logging  # noqa: PLC0415

    import ray  # noqa: PLC0415 - importing the package must not pull Ray in

    global _verbose
    if ray.is_initialized():
        return
    address = connection.address or os.environ.get("RAY_ADDRESS")
    if address:
        check_answers(address, connection.connect_timeout_s)
    _verbose = connection.verbose
    kwargs = {"num_cpus": num_cpus} if num_cpus is not None and not address else {}
    ray.init(address=address, log_to_driver=connection.verbose,
             logging_level=logging.INFO if connection.verbose else logging.ERROR, **kwargs)
