"""The job runner: what every script in ``jobs/`` does around its one library call."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

import pyarrow.fs as pafs

from deepfake_lib.core import storage
from deepfake_lib.core.checks import FlagParser
from deepfake_lib.core.storage import RunDir
from deepfake_lib.execution.connect import CONNECT_TIMEOUT_S, RayConnection, init_ray
from deepfake_lib.report import try_write_report


def add_ray_flags(parser: argparse.ArgumentParser) -> None:
    """``--address``, ``--connect-timeout-s`` and ``--verbose``, as every job that uses Ray
    takes them."""
    parser.add_argument("--address", default=None,
                        help="Ray address (default: $RAY_ADDRESS or a local Ray)")
    parser.add_argument("--connect-timeout-s", type=float, default=CONNECT_TIMEOUT_S,
                        help="give up on a Ray address that does not answer within this many "
                             "seconds, default %(default)g (allowed: > 0)")
    parser.add_argument("--verbose", action="store_true",
                        help="also show Ray's and Ray Train's own logs and the workers' output")


def ray_connection(parser: FlagParser, args: argparse.Namespace) -> RayConnection:
    """The job's :class:`RayConnection` from its flags (a bad value: one line, exit code 2)."""
    with parser.checked():
        return RayConnection(args.address, args.connect_timeout_s, args.verbose)


def _same_place(a: str, b: str) -> bool:
    if storage.is_uri(a) or storage.is_uri(b):
        return a.rstrip("/") == b.rstrip("/")
    return os.path.realpath(a) == os.path.realpath(b)


def check_inputs(config: Any) -> None:
    """Raise ValueError, before anything starts, for a ``--data`` folder that is not there,
    is a file, or is the run directory itself (the run's outputs would be its next inputs)."""
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
            connection: RayConnection | None = RayConnection()) -> int:
    """What every job script does: check that the run directory ``config.out`` can be
    written, join or start Ray (unless ``connection`` is None: the stage runs in this
    process), run one stage, print its summary. Returns the exit code: 1 when the stage could
    do nothing (a clear error, storage errors included, printed as one line without a
    traceback, or a summary that says nothing succeeded), 130 when interrupted (Ctrl-C), else
    0. A stage that finished rewrites the report of its run directory
    (:mod:`deepfake_lib.report`) and prints where it is."""
    run = RunDir(config.out)
    try:
        run.check_writable()
        check_inputs(config)
        if connection is not None:
            init_ray(connection)
        summary = stage(config)
    except KeyboardInterrupt:
        print(f"{name}: interrupted; what was finished is in {run.location}. To resume, "
              f"rerun {_same_command(config)}: finished work is skipped.", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as exc:  # pyarrow's storage errors are OSErrors
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    print(summary.text())
    if (report := try_write_report(config.out)) is not None:
        print(f"report: {report}")
    return 0 if summary.succeeded else 1


def _same_command(config: Any) -> str:
    """How to rerun a job without undoing what it finished."""
    if getattr(config, "overwrite", False):
        return "the same command without --overwrite"
    return "the same command"
