"""A video in which no face is ever found, through every stage: a row that says so, never a
crash and never a probability passed off as the model's."""

import csv
import json

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

FALLBACK = 0.37  # not 0.5, so that a fallback cannot pass for a default


@pytest.fixture(scope="module")
def faceless_part(tmp_path_factory):
    """A DFDC-style part holding one REAL video of a moving gradient: 3 s, 25 fps, 320 x 240."""
    part = tmp_path_factory.mktemp("faceless") / "dfdc_train_part_0"
    part.mkdir()
    writer = cv2.VideoWriter(str(part / "blank.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25,
                             (320, 240))
    ramp = np.tile(np.linspace(0, 255, 320, dtype=np.float32), (240, 1))
    for i in range(75):
        frame = ((ramp + 3 * i) % 256).astype(np.uint8)
        writer.write(np.repeat(frame[..., None], 3, axis=2))
    writer.release()
    (part / "metadata.json").write_text(json.dumps({"blank.mp4": {"label": "REAL"}}))
    return part


@pytest.mark.ray
def test_encode_gives_a_no_face_error_row(ray_session, faceless_part, tmp_path):
    from deepfake_lib.stages.encode import EncodeConfig, run_encode

    summary = run_encode(EncodeConfig(data=(str(faceless_part.parent),), out=str(tmp_path)))
    assert (summary.videos, summary.encoded, summary.faces) == (1, 0, 0)
    assert summary.errors == {"no_face": 1} and not summary.succeeded
    errors = pq.read_table(tmp_path / "errors").to_pylist()
    assert [(e["video_id"], e["stage"], e["kind"]) for e in errors] == [
        ("blank.mp4", "encode", "no_face")]
    videos = pq.read_table(tmp_path / "videos").to_pylist()
    assert videos[0]["status"] == "no_face" and videos[0]["frames_tried"] == 2  # at 0 s and 2 s


@pytest.mark.ray
def test_prepare_makes_no_crop_and_a_no_face_row(ray_session, faceless_part, tmp_path):
    from deepfake_lib.stages.prepare import PrepareConfig, run_prepare

    summary = run_prepare(PrepareConfig(data=(str(faceless_part.parent),), out=str(tmp_path)))
    assert summary.crops == {} and summary.errors == {"no_face": 1} and not summary.succeeded
    errors = pq.read_table(tmp_path / "prepare_errors").to_pylist()
    assert [(e["video_id"], e["stage"], e["kind"]) for e in errors] == [
        ("blank.mp4", "prepare", "no_face")]


@pytest.mark.ray
def test_score_says_no_face_and_gives_the_fallback(ray_session, tiny_model, faceless_part,
                                                  tmp_path):
    from deepfake_lib.stages.score import ScoreConfig, run_score

    summary = run_score(ScoreConfig(data=(str(faceless_part.parent),), out=str(tmp_path),
                                    model=str(tiny_model), frames=8, fallback=FALLBACK))
    assert summary.statuses == {"no_face": 1} and not summary.succeeded
    [row] = pq.read_table(tmp_path / "scores").to_pylist()
    assert row["status"] == "no_face" and row["prob"] == pytest.approx(FALLBACK)
    assert row["n_faces"] == 0 and row["label"] == 0
    with open(tmp_path / "submission.csv", newline="") as f:
        [submitted] = list(csv.DictReader(f))
    assert submitted["filename"] == "blank.mp4"
    assert float(submitted["label"]) == pytest.approx(FALLBACK)


@pytest.mark.ray
def test_predict_says_no_face_and_exits_1(ray_session, tiny_model, faceless_part, tmp_path,
                                          capsys):
    from jobs.predict import main

    out = tmp_path / "predictions"
    video = str(faceless_part / "blank.mp4")
    assert main([video, "--model", str(tiny_model), "--out", str(out), "--frames", "8",
                 "--fallback", str(FALLBACK)]) == 1  # nothing scored by the model
    line = capsys.readouterr().out.splitlines()[0]
    assert line.split()[:2] == [f"{FALLBACK:.3f}", "no_face"] and video in line
    with open(out / "predictions.csv", newline="") as f:
        [row] = list(csv.DictReader(f))
    assert row["status"] == "no_face" and float(row["prob"]) == pytest.approx(FALLBACK)
