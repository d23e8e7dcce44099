import csv
import io
import os
import shutil

import boto3
import cv2
import numpy as np
import pytest

from deepfake_lib.media import faces
from deepfake_lib.media.pictures import picture, strip_frames
from deepfake_lib.media.tracks import FaceTracks, Track
from deepfake_lib.models.detector import load_model
from deepfake_lib.stages.predict import picture_names
from deepfake_lib.stages.score import ScoreConfig, score_video


def _rows(out):
    with open(out / "predictions.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.ray
def test_predict_scores_any_videos_and_gives_every_bad_path_a_status_row(
        tiny_model, ray_session, shared_data, bad_inputs, tmp_path, capsys):
    from jobs.predict import main

    folder, expected = bad_inputs
    boto3.client("s3").upload_file(str(shared_data / "videos" / "ffpp" / "004_982.mp4"), "data",
                                    "predict/004_982.mp4")
    (tmp_path / "notes.txt").write_text("a file that is no video")
    good = str(shared_data / "videos" / "ffpp" / "004.mp4")
    out = tmp_path / "predictions"
    paths = [good, "s3://data/predict/004_982.mp4", str(folder), str(tmp_path / "missing.mp4"),
             str(tmp_path / "notes.txt"), str(tmp_path / "empty_folder")]
    (tmp_path / "empty_folder").mkdir()
    assert main([*paths, "--model", str(tiny_model), "--out", str(out), "--frames", "8"]) == 0
    printed = capsys.readouterr()
    assert "Traceback" not in printed.out + printed.err
    rows = {r["path"]: r for r in _rows(out)}
    assert len(rows) == 5 + len(expected)
    for path in (good, "s3://data/predict/004_982.mp4"):
        row = rows[path]
        assert row["status"] == "ok" and 0.01 <= float(row["prob"]) <= 0.99
        assert int(row["n_frames"]) == 8 and int(row["n_faces"]) >= 8 and float(row["seconds"]) > 0
        image = cv2.imread(str(out / row["picture"]))
        assert image is not None and image.shape[1] > 2 * image.shape[0]  # a strip of frames
    assert rows[good]["picture"] == "004.mp4.png"
    for name, kind in expected.items():
        row = rows[str(folder / name)]
        assert row["status"] == "error" and row["message"].startswith(kind), row
        assert row["prob"] == "0.500000" and row["picture"] == ""
    assert rows[str(tmp_path / "missing.mp4")]["message"].startswith("missing")
    assert rows[str(tmp_path / "notes.txt")]["message"].startswith("not_video")
    assert rows[str(tmp_path / "empty_folder")]["message"].startswith("no_video")
    # one line per video: probability, status, seconds, path
    lines = [line for line in printed.out.splitlines() if " s  " in line]
    assert len(lines) == len(rows)
    assert any(line.startswith(f"{float(rows[good]['prob']):.3f}  ok") and line.endswith(good)
               for line in lines)
    assert f"predict: {len(rows)} videos ({len(rows) - 2} error, 2 ok)" in printed.out


@pytest.mark.ray
def test_predict_exits_1_when_no_video_was_scored(tiny_model, ray_session, bad_inputs, tmp_path,
                                                  capsys):
    from jobs.predict import main

    folder, _ = bad_inputs
    out = tmp_path / "predictions"
    assert main([str(folder / "truncated.mp4"), str(tmp_path / "missing.mp4"),
                 "--model", str(tiny_model), "--out", str(out)]) == 1
    assert [r["status"] for r in _rows(out)] == ["error", "error"]
    assert main([str(folder), "--model", str(tmp_path / "no_model"), "--out", str(out)]) == 1
    assert "no trained model" in capsys.readouterr().err


@pytest.mark.ray
def test_the_mask_comes_from_the_decoder_with_the_same_probabilities(tiny_model, shared_data):
    model = load_model(str(tiny_model), device="cpu")
    kept: dict = {}
    row = score_video(str(shared_data / "videos" / "ffpp" / "004_982.mp4"),
                      faces.get_face_detector(model.config.face_detector, "cpu"), model,
                      ScoreConfig(data=(), out="unused", frames=8), 0.5, keep=kept)
    assert row["status"] == "ok" and len(kept["frames"]) == 8 and kept["tracks"].tracks
    index = min(kept["frames"])
    (_, box), = kept["tracks"].boxes_at(index)[:1]
    crop, _ = faces.crop_face_with_box(kept["frames"][index], box, model.config.crop_margin,
                                       model.config.image_size)
    probs, masks = model.predict_with_masks([crop, crop[::-1].copy()])
    np.testing.assert_allclose(probs, model.predict([crop, crop[::-1].copy()]), atol=1e-5)
    assert masks.shape == (2, 64, 64) and 0 <= masks.min() <= masks.max() <= 1
    assert masks.std() > 0  # a per-pixel map, not one value


class _Masks:
    """A stand-in model: every face fake (0.9), its mask altered (1) in the top-left quarter."""

    def __init__(self, config):
        self.config = config

    def predict_with_masks(self, crops):
        size = self.config.image_size
        mask = np.zeros((size, size), np.float32)
        mask[: size // 2, : size // 2] = 1
        return np.full(len(crops), 0.9, np.float32), np.stack([mask] * len(crops))


def test_the_picture_shows_each_face_box_and_its_mask_as_heat():
    from deepfake_lib.media.pictures import FRAME_PX, TITLE_PX
    from deepfake_lib.models.detector import ModelConfig

    grey = np.full((360, 640, 3), 128, np.uint8)
    frames = {i: grey.copy() for i in range(0, 100, 10)}
    tracks = FaceTracks([Track(0, [0, 90], [(100, 300, 200, 200), (100, 300, 200, 200)],
                               [1.0, 1.0])], 100, 360, 640, 10)
    config = ModelConfig(encoder="resnet18", encoder_weights="none", image_size=64,
                         crop_margin=0.0)
    image = cv2.imdecode(np.frombuffer(picture(frames, tracks, _Masks(config), "a title",
                                               strip=3), np.uint8), cv2.IMREAD_COLOR)
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    assert image.shape[0] > TITLE_PX + FRAME_PX and image.shape[1] >= 3 * 355  # 3 frames
    scale = FRAME_PX / 360
    frame = image[TITLE_PX:TITLE_PX + FRAME_PX, : int(640 * scale)].astype(int)

    def at(y, x):
        return frame[int(y * scale), int(x * scale)]

    hot, cold = at(125, 225), at(175, 275)  # the mask's quarter of the face, and the rest
    assert hot[0] - hot[1] > 60 and hot[0] - hot[2] > 60  # heat: red where altered
    assert np.abs(cold - 128).max() < 8  # untouched where not
    assert np.abs(at(300, 500) - 128).max() < 8  # nor outside the face
    box = at(100, 250)  # the top edge of the box: red for a fake face
    assert box[0] > 180 and box[1] < 80


def test_strip_and_picture_names():
    assert strip_frames([5, 1, 3], 6) == [1, 3, 5]
    assert strip_frames(list(range(32)), 4) == [0, 10, 21, 31]
    assert picture_names(["a/x.mp4", "b/x.mp4", "s3://b/y.mov", "c/x.mp4"]) == [
        "x.mp4.png", "x.mp4-2.png", "y.mov.png", "x.mp4-3.png"]
    long = "v" * 300 + ".mp4"  # names over the file system's limit are cut, still unique
    names = picture_names([long, "other/" + long])
    assert all(len(n.encode()) <= 255 for n in names) and len(set(names)) == 2
    assert picture_names(["=cmd.mp4"]) == ["_cmd.mp4.png"]  # no formula in a picture's name


def test_cells_a_spreadsheet_would_run_are_written_as_text():
    from deepfake_lib.stages.predict import predictions_csv

    rows = [{"path": p, "prob": 0.5, "status": "error", "message": m, "seconds": 0.0,
             "n_faces": 0, "n_tracks": 0, "n_frames": 0, "picture": ""}
            for p, m in [("=HYPERLINK(\"x\")", "@SUM(A1)"), ("+1.mp4", "-2"),
                         ("ok.mp4", "missing: = inside is fine")]]
    written = list(csv.DictReader(io.StringIO(predictions_csv(rows).decode())))
    assert [r["path"] for r in written] == ["'=HYPERLINK(\"x\")", "'+1.mp4", "ok.mp4"]
    assert [r["message"] for r in written] == ["'@SUM(A1)", "'-2", "missing: = inside is fine"]
    assert written[0]["prob"] == "0.500000"


@pytest.mark.ray
def test_one_picture_that_cannot_be_written_loses_nothing_else(
        tiny_model, ray_session, shared_data, tmp_path, monkeypatch):
    from deepfake_lib.core.storage import RunDir
    from jobs.predict import main

    folder = tmp_path / "videos"
    folder.mkdir()
    long_name = "a" * 226 + ".mp4"  # legal; its picture's name is 234 bytes
    shutil.copy(shared_data / "videos" / "ffpp" / "004.mp4", folder / long_name)
    shutil.copy(shared_data / "videos" / "ffpp" / "519.mp4", folder / "full_disk.mp4")
    write_bytes = RunDir.write_bytes

    def full_disk(self, rel, data):
        if rel.startswith("full_disk"):
            raise OSError(28, "No space left on device")
        write_bytes(self, rel, data)

    monkeypatch.setattr(RunDir, "write_bytes", full_disk)
    out = folder / "pred"  # inside the folder it reads: never taken as input
    for _ in range(2):
        assert main([str(folder), "--model", str(tiny_model), "--out", str(out),
                     "--frames", "4"]) == 0
        rows = {os.path.basename(r["path"]): r for r in _rows(out)}
        assert sorted(rows) == sorted([long_name, "full_disk.mp4"])
    assert all(r["status"] == "ok" for r in rows.values())
    assert rows[long_name]["picture"] == long_name + ".png"
    assert (out / (long_name + ".png")).exists()
    assert rows["full_disk.mp4"]["picture"] == ""
    assert rows["full_disk.mp4"]["message"] == "picture: [Errno 28] No space left on device"
    assert not [n for n in os.listdir(out) if n.startswith(".tmp-")]
