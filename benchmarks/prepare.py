"""Prepare benchmark: what a DFDC part costs as its originals get more fakes.

    .venv/bin/python benchmarks/prepare.py [--fakes 5] [--every 10]

Three parts, each prepared by a fresh Python on a Ray of one CPU, all in the same run:

- the FF++ original 004.mp4 with one fake (004_982.mp4);
- the same original with ``--fakes`` fakes (links to that fake under other names, as DFDC
  makes about five fakes of each original): prepare decodes and tracks the original once for
  all of its fakes;
- the baseline: ``--fakes`` originals with one fake each (links to the same two files under
  other names), the same fakes with their original decoded and tracked again for each, as
  prepare did before it shared the original.

Target: the second part costs at most 2.3 x the first, and well under the baseline.
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


def write_part(folder: Path, fakes: int, originals: int = 1) -> None:
    """A DFDC-layout part: ``originals`` copies of 004.mp4 (links under other names), each
    with ``fakes`` fakes made from it (links to 004_982.mp4)."""
    folder.mkdir(parents=True)
    ffpp = SHARED / "videos" / "ffpp"
    metadata = {}
    for o in range(originals):
        original = f"004_{o}.mp4"
        os.symlink(ffpp / "004.mp4", folder / original)
        metadata[original] = {"label": "REAL", "split": "train", "original": None}
        for k in range(fakes):
            name = f"004_{o}_fake{k}.mp4"
            os.symlink(ffpp / "004_982.mp4", folder / name)
            metadata[name] = {"label": "FAKE", "split": "train", "original": original}
    (folder / "metadata.json").write_text(json.dumps(metadata))


def child(part: str, out: str, every: int) -> None:
    import ray

    from deepfake_lib.stages.prepare import PrepareConfig, run_prepare

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
    parts = {"1 original, 1 fake": (1, 1),
             f"1 original, {a.fakes} fakes (the library)": (a.fakes, 1),
             f"{a.fakes} originals, 1 fake each (baseline: the original again per fake)":
                 (1, a.fakes)}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, (name, (fakes, originals)) in enumerate(parts.items()):
            part = Path(tmp) / f"part_{k}"
            write_part(part, fakes, originals)
            results[name] = run_child(__file__, str(part), str(Path(tmp) / f"run_{k}"),
                                      "--every", str(a.every))
    one = results["1 original, 1 fake"]["seconds"]
    baseline = list(results.values())[-1]["seconds"]
    print_table(f"prepare on one CPU, {a.fakes} fakes (every {a.every}th frame)",
                ["part", "seconds", "x one fake", "x baseline", "crops", "errors"],
                [[name, r["seconds"], r["seconds"] / one, r["seconds"] / baseline, r["crops"],
                  r["errors"] or "none"] for name, r in results.items()])


if __name__ == "__main__":
    main()
