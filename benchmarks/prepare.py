"""Prepare benchmark: what a DFDC part costs as its originals get more fakes.

    .venv/bin/python benchmarks/prepare.py [--fakes 5] [--every 10]

Two parts, each prepared by a fresh Python on a Ray of one CPU: the FF++ original 004.mp4 with
one fake (004_982.mp4), and the same original with ``--fakes`` fakes (links to that fake under
other names, as DFDC makes about five fakes of each original). Prepare decodes and tracks each
original once for all its fakes, so the second part should cost far less than ``--fakes``
times the first (target: at most 2.3 x with five fakes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED, print_table, run_child  # noqa: E402


def write_part(folder: Path, fakes: int) -> None:
    """A DFDC-layout part: 004.mp4 and ``fakes`` fakes made from it (links)."""
    folder.mkdir(parents=True)
    ffpp = SHARED / "videos" / "ffpp"
    os.symlink(ffpp / "004.mp4", folder / "004.mp4")
    metadata = {"004.mp4": {"label": "REAL", "split": "train", "original": None}}
    for k in range(fakes):
        name = f"004_fake{k}.mp4"
        os.symlink(ffpp / "004_982.mp4", folder / name)
        metadata[name] = {"label": "FAKE", "split": "train", "original": "004.mp4"}
    (folder / "metadata.json").write_text(json.dumps(metadata))


def child(part: str, out: str, every: int) -> None:
    import ray

    from deepfake_lib.prepare import PrepareConfig, run_prepare

    ray.init(address="local", num_cpus=1, log_to_driver=False)
    start = time.perf_counter()
    summary = run_prepare(PrepareConfig(data=(part,), out=out, every=every))
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "crops": summary.crops, "errors": summary.errors}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--fakes", type=int, default=5)
    p.add_argument("--every", type=int, default=10, help="crop every k-th frame")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return child(*a.child, a.every)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fakes in (1, a.fakes):
            part = Path(tmp) / f"part_{fakes}"
            write_part(part, fakes)
            results[fakes] = run_child(__file__, str(part), str(Path(tmp) / f"run_{fakes}"),
                                       "--every", str(a.every))
    one = results[1]["seconds"]
    print_table(f"prepare on one CPU, one original with 1 and {a.fakes} fakes (every {a.every})",
                ["fakes", "seconds", "x one fake", "crops", "errors"],
                [[k, r["seconds"], r["seconds"] / one, r["crops"], r["errors"] or "none"]
                 for k, r in results.items()])


if __name__ == "__main__":
    main()
