import json
import os
import re
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from deepfake_lib.report.browser import (
    check_images,
    find_browser,
    screenshot,
    small_png,
)
from deepfake_lib.report.html import most_wrong, write_report


@pytest.fixture(scope="session")
def browser() -> str:
    path = find_browser()
    if path is None:
        message = "no Chromium on PATH: apt-get install chromium (.ci/run installs it)"
        if os.environ.get("CI"):
            raise RuntimeError(message)
        pytest.skip(message)
    return path


@pytest.fixture
def scored_run(tiny_model, ffpp_crops, shared_data, bad_inputs, tmp_path, capsys):
    """A run directory with prepare's and train's records and outputs, scored by the score job
    on the FF++ videos and the bad inputs; the job's printed output."""
    from jobs.score import main

    prepared, _ = ffpp_crops
    out = tmp_path / "run"
    shutil.copytree(prepared.out, out)
    shutil.copytree(tiny_model, out / "model")
    shutil.copy(tiny_model.parent / "train.json", out / "train.json")
    folder, _ = bad_inputs
    assert main(["--data", str(shared_data / "videos" / "ffpp"), str(folder), "--out", str(out),
                 "--frames", "8"]) == 0
    return out, capsys.readouterr().out


@pytest.mark.ray
def test_a_stage_job_writes_the_report_and_it_renders_in_chromium(scored_run, bad_inputs,
                                                                   browser, tmp_path):
    out, printed = scored_run
    assert printed.rstrip().endswith(f"report: {out / 'report.html'}")
    page = (out / "report.html").read_text()
    scores = pq.read_table(out / "scores").to_pylist()
    board = json.loads((out / "leaderboard.json").read_text())

    stages = dict(re.findall(r"<td><b>(\w+)</b></td><td class='(\w+)'>", page))
    assert stages == {"prepare": "done", "train": "done", "score": "done"}
    assert "<td>encode</td><td class='none'>not run</td>" in page
    assert f"<td class=\"num\">{board['logloss']:.4g}</td>" in page
    # errors by kind, with their first rows: the bad inputs scored as errors
    _, expected = bad_inputs
    assert f"<td>error</td><td class='num'>{len(expected)}</td>" in page
    assert sum(f"{name}: " in page for name in expected) == 3  # the first 3 rows shown
    # the most confidently wrong labelled videos, each with its picture
    wrong = most_wrong(scores)
    assert wrong, "the tiny model gets some FF++ video wrong"
    drawn = sorted(p.name for p in (out / "report").iterdir())
    assert len(drawn) == len(wrong) and all(f"alt=\"picture of {r['video_id']}\"" in page
                                            for r in wrong)
    for where in ("scores", "submission.csv", "leaderboard.json", "model", "crops"):
        assert f"<code>{out / where}" in page
    assert "http://" not in page and "https://" not in page  # nothing to fetch

    check = check_images(out / "report.html", browser)
    figures = ["masks.png", "roc_calibration.png"]
    assert sorted(p.name for p in (out / "figures").glob("*.png")) == figures
    assert check.images == len(figures) + len(wrong) and check.broken == []
    shot = screenshot(out / "report.html", tmp_path / "shot.png", browser)
    assert shot.shape == (1600, 1200, 3)
    bands = np.array_split((shot < 235).any(axis=2), 4)  # top to bottom
    assert all(band.mean() > 0.01 for band in bands), [band.mean() for band in bands]
    assert small_png(shot, tmp_path / "small.png") < 300_000  # as docs/report.png is made

    # rewritten (as after every stage): the pictures are kept, not drawn again
    times = {p.name: p.stat().st_mtime_ns for p in (out / "report").iterdir()}
    assert write_report(str(out)) == str(out / "report.html")
    assert {p.name: p.stat().st_mtime_ns for p in (out / "report").iterdir()} == times


def test_a_folder_without_stage_records_gets_no_report(tmp_path):
    (tmp_path / "predictions.csv").write_text("path,prob\n")
    assert write_report(str(tmp_path)) is None
    assert not (tmp_path / "report.html").exists()


def test_most_wrong_are_the_labelled_answers_furthest_on_the_wrong_side():
    rows = [{"video_id": v, "label": label, "prob": prob, "status": status}
            for v, label, prob, status in [
                ("a", 1, 0.1, "ok"), ("b", 0, 0.95, "partial"), ("c", 1, 0.9, "ok"),
                ("d", 0, 0.45, "ok"), ("e", None, 0.99, "ok"), ("f", 1, 0.01, "error"),
                ("g", 0, 0.6, "ok")]]
    assert [r["video_id"] for r in most_wrong(rows)] == ["b", "a", "g"]
    assert [r["video_id"] for r in most_wrong(rows, 1)] == ["b"]
