import io

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from deepfake_lib.media.faces import decode_image
from deepfake_lib.models.leaderboard import (
    leaderboard,
    roc_calibration_png,
    submission_csv,
)


def _row(video_id, prob, label, status="ok", seconds=1.0):
    return {"video_id": video_id, "prob": prob, "label": label, "status": status,
            "seconds": seconds}


def test_submission_lists_every_video_in_order_with_the_fallback_for_the_missing():
    rows = [_row("b.mp4", 0.25, 1), _row("a.mp4", 0.9, 0)]
    text = submission_csv(["a.mp4", "c.mp4", "b.mp4"], rows, fallback=0.5).decode()
    assert text == "filename,label\na.mp4,0.900000\nc.mp4,0.500000\nb.mp4,0.250000\n"


def test_hostile_file_names_survive_a_round_trip_through_pandas():
    import pandas as pd

    names = ["a,b.mp4", 'say "hi".mp4', "two\nlines.mp4", "'single'.mp4", " spaced .mp4"]
    rows = [_row(v, 0.1 * (i + 1), None) for i, v in enumerate(names)]
    back = pd.read_csv(io.BytesIO(submission_csv(names, rows, fallback=0.5)),
                       keep_default_na=False)
    assert list(back.columns) == ["filename", "label"]
    assert back["filename"].tolist() == names
    assert back["label"].tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])


def test_leaderboard_scores_the_labelled_and_times_them_all():
    rows = [_row("a", 0.9, 1, seconds=2.0), _row("b", 0.2, 0, seconds=4.0),
            _row("c", 0.6, 1, "partial", 6.0), _row("d", 0.5, None, "timeout", 12.0)]
    board = leaderboard(rows)
    assert board["count"] == 3 and board["auc"] == pytest.approx(roc_auc_score([1, 0, 1],
                                                                              [0.9, 0.2, 0.6]))
    assert board["statuses"] == {"ok": 2, "partial": 1, "timeout": 1}
    assert board["time_max"] == 12.0 and board["time_p50"] == pytest.approx(5.0)
    assert leaderboard([_row("d", 0.5, None)]) is None


def test_the_figure_needs_both_classes():
    assert roc_calibration_png([_row("a", 0.9, 1), _row("b", 0.7, 1)]) is None
    rng = np.random.default_rng(0)
    rows = [_row(str(i), float(p), int(p > 0.5)) for i, p in enumerate(rng.uniform(size=40))]
    image = decode_image(roc_calibration_png(rows))
    assert image.shape[1] > 800 and image.std() > 10
