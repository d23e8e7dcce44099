"""What more looks at a crop buy: mirror images, other input sizes, several models.

    .venv/bin/python benchmarks/views.py                                   # the shipped model
    .venv/bin/python benchmarks/views.py --model reference reference@192 runs/reference4/model

Each ``--model`` entry is a model folder (or ``reference``), optionally ``@SIZE`` to feed it
crops resized to SIZE px instead of its own input size. Every combination of the entries is
scored with and without each crop's mirror image: the mean of the views' logits, calibrated by
one temperature fitted on the two sets together (as training's validation does, so these
log losses are of a temperature fitted on them). The sets: the ``dfdc_faces`` crops of the
people the shipped detector held out (``validation_videos.txt``) and ``dfdc_dev``. Seconds
per crop: each entry's plain pass is timed (its mirror pass is taken to cost the same) and
the views' times added up; "x time" is against the first entry's single view, in the same run.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED, print_table  # noqa: E402
from detect import dfdc_faces_validation, folder_crops  # noqa: E402

from deepfake_lib.models.detector import load_model  # noqa: E402
from deepfake_lib.models.metrics import binary_scores, fit_temperature  # noqa: E402


def entry_logits(entry: str, crop_sets: list[list[np.ndarray]]
                 ) -> tuple[list[np.ndarray], list[np.ndarray], float]:
    """Per set, the logits of the crops and of their mirror images under ``entry``
    (``MODEL[@SIZE]``), and the seconds per crop of one view."""
    model_dir, at, size = entry.rpartition("@")
    if not (at and size.isdigit()):
        model_dir, size = entry, ""
    model = load_model(model_dir, device="cpu")
    model.config = replace(model.config, flip_average=False,
                           image_size=int(size) if size else model.config.image_size)
    model.logits(crop_sets[0][:1])  # warm-up
    plain, mirrored, seconds, count = [], [], 0.0, 0
    for crops in crop_sets:
        start = time.perf_counter()
        plain.append(model.logits(crops))
        seconds, count = seconds + time.perf_counter() - start, count + len(crops)
        mirrored.append(model.logits([np.ascontiguousarray(c[:, ::-1]) for c in crops]))
    return plain, mirrored, seconds / count


def scores(views: list[list[np.ndarray]], labels: list[np.ndarray]) -> list[float]:
    """AUC and log loss per set of the mean of ``views``' logits, one temperature for all."""
    z = [np.mean([v[k] for v in views], axis=0) for k in range(len(labels))]
    temperature = fit_temperature(np.concatenate(labels), np.concatenate(z))
    out = []
    for zk, yk in zip(z, labels):
        s = binary_scores(yk, 1 / (1 + np.exp(-zk / temperature)))
        out += [s["auc"], s["logloss"]]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", nargs="+", default=["reference"], help="MODEL_DIR[@SIZE] ...")
    a = p.parse_args()
    held_out, dev = dfdc_faces_validation(SHARED), folder_crops(SHARED / "crops" / "dfdc_dev")
    crop_sets, labels = [held_out.crops, dev.crops], [held_out.labels, dev.labels]
    print(f"views: {len(held_out.crops)} held-out crops, {len(dev.crops)} dfdc_dev crops",
          flush=True)
    logits = {e: entry_logits(e, crop_sets) for e in a.model}
    baseline = logits[a.model[0]][2]
    rows = []
    for k in range(1, len(a.model) + 1):
        for combo in itertools.combinations(a.model, k):
            for mirror in (False, True):
                views = [v for e in combo
                         for v in (logits[e][:2] if mirror else logits[e][:1])]
                seconds = sum(logits[e][2] for e in combo) * (2 if mirror else 1)
                rows.append([" + ".join(combo), "yes" if mirror else "no",
                             *scores(views, labels), seconds, seconds / baseline])
    print_table("Views of a crop: held-out people and dfdc_dev",
                ["models", "mirror", "held-out AUC", "held-out log loss", "dfdc_dev AUC",
                 "dfdc_dev log loss", "s/crop", "x time"], rows)


if __name__ == "__main__":
    main()
