"""Helpers shared by the benchmarks: tables, child processes, the shared data."""

from __future__ import annotations

import json
import subprocess
import sys

from deepfake_lib.data.sample import shared_data_dir

SHARED = shared_data_dir()


def print_table(title: str, headers: list[str], rows: list[list]) -> None:
    cells = [[f"{v:.3g}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print(f"\n## {title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
    sys.stdout.flush()


def run_child(script: str, *args: str, timeout: int = 1800) -> dict:
    """Run ``script --child ARGS`` in a fresh Python and return the JSON it prints last
    (a fresh process gives honest peak memory and its own Ray)."""
    out = subprocess.run([sys.executable, script, "--child", *args], capture_output=True,
                         text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
