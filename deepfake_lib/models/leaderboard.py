"""What the score stage reports from its rows: the submission, the leaderboard of the
labelled videos, and its ROC and calibration figure.

A score row is a :data:`scoring.SCORE_SCHEMA` row: ``video_id``, ``prob`` (already clipped),
``status``, ``seconds`` and ``label`` (1 fake, 0 real, None unknown) are used here.
"""

from __future__ import annotations

import csv
import io
from collections import Counter

import numpy as np

from deepfake_lib.models import metrics


def submission_csv(video_ids: list[str], rows: list[dict], fallback: float) -> bytes:
    """Kaggle's ``filename,label`` file: one line per video in ``video_ids``, in that order;
    a video without a row gets ``fallback``. Names holding commas, quotes or line breaks are
    quoted as CSV readers expect."""
    prob = {r["video_id"]: r["prob"] for r in rows}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["filename", "label"])
    writer.writerows([v, f"{prob.get(v, fallback):.6f}"] for v in video_ids)
    return out.getvalue().encode()


def leaderboard(rows: list[dict], clip: float = metrics.CLIP) -> dict | None:
    """Scores of the labelled rows (None when none is labelled), statuses and times."""
    labelled = [r for r in rows if r["label"] is not None]
    if not labelled:
        return None
    y = np.array([r["label"] for r in labelled])
    p = np.array([r["prob"] for r in labelled])
    board = metrics.binary_scores(y, p)
    board["logloss"] = metrics.log_loss(y, p, clip)
    seconds = np.array([r["seconds"] for r in rows])
    board.update(statuses=dict(Counter(r["status"] for r in rows)),
                 time_p50=float(np.percentile(seconds, 50)),
                 time_p95=float(np.percentile(seconds, 95)), time_max=float(seconds.max()))
    return board


def roc_calibration_png(rows: list[dict]) -> bytes | None:
    """ROC and calibration plots of the labelled rows, side by side (PNG bytes); None unless
    both classes are present."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from sklearn.metrics import roc_curve  # noqa: PLC0415

    labelled = [r for r in rows if r["label"] is not None]
    y = np.array([r["label"] for r in labelled])
    p = np.array([r["prob"] for r in labelled])
    if len(set(y.tolist())) < 2:
        return None
    fpr, tpr, _ = roc_curve(y, p)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 5), dpi=100)
    ax1.plot(fpr, tpr, lw=2)
    ax1.plot([0, 1], [0, 1], "k--", lw=1)
    ax1.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    bins = np.linspace(0, 1, 11)
    which = np.clip(np.digitize(p, bins) - 1, 0, 9)
    centres = [(p[which == b].mean(), y[which == b].mean(), (which == b).sum())
               for b in range(10) if (which == b).any()]
    ax2.plot([0, 1], [0, 1], "k--", lw=1)
    ax2.scatter([c[0] for c in centres], [c[1] for c in centres],
                s=[20 + 10 * c[2] for c in centres])
    ax2.set(xlabel="predicted probability of fake", ylabel="share of fakes",
            title="calibration (area: videos)", xlim=(0, 1), ylim=(0, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
