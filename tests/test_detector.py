import json
import shutil
from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch

from deepfake_lib.media import faces
from deepfake_lib.models.detector import ModelConfig, load_model, reference_dir
from deepfake_lib.stages.score import ScoreConfig, score_video


@pytest.mark.parametrize("change,field", [
    ({"face_detector": "yolo"}, "'face_detector' is \"yolo\""),
    ({"image_size": "224"}, "'image_size' is \"224\""),
    ({"image_size": 0}, "'image_size' is 0"),
    ({"crop_margin": -0.1}, "'crop_margin' is -0.1"),
    ({"temperature": float("nan")}, "'temperature' is NaN"),
    ({"mean": [0.5, 0.5]}, "'mean' is [0.5, 0.5]"),
    ({"decoder_channels": [8, 8]}, "'decoder_channels' is [8, 8]"),
    ({"temprature": 2.0}, "unknown field 'temprature'"),
    ({"flip_average": "yes"}, "'flip_average' is \"yes\""),
])
def test_every_field_of_config_json_is_checked_at_load(tmp_path, change, field):
    model = tmp_path / "model"
    shutil.copytree(reference_dir(), model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ValueError, match="config.json is not a model's config") as caught:
        load_model(str(model))
    assert field in str(caught.value)


def test_a_config_round_trips():
    config = ModelConfig(image_size=160, crop_margin=0.0, temperature=1.7)
    assert ModelConfig.from_json(config.to_json()) == config


def test_flip_average_is_the_mean_of_a_crop_and_its_mirror_image(shared_data):
    crops = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
             for p in sorted((shared_data / "crops" / "dfdc_dev" / "fake").iterdir())[:4]]
    mirrors = [np.ascontiguousarray(c[:, ::-1]) for c in crops]
    averaged = load_model("reference", device="cpu")
    assert averaged.config.flip_average  # the shipped detector was calibrated with it
    single = load_model("reference", device="cpu")
    single.config = replace(single.config, flip_average=False)
    expected = (single.logits(crops) + single.logits(mirrors)) / 2
    assert np.allclose(averaged.logits(crops), expected, atol=1e-4)
    assert not np.allclose(single.logits(crops), expected, atol=1e-3)
    # the pictures' probabilities are the same numbers, and their masks face the crop
    probs, masks = averaged.predict_with_masks(crops)
    assert np.allclose(probs, averaged.predict(crops), atol=1e-4)
    _, mirrored_masks = averaged.predict_with_masks(mirrors)
    assert np.allclose(masks, mirrored_masks[:, :, ::-1], atol=1e-4)


def test_a_model_saved_before_flip_average_keeps_its_calibration(tmp_path):
    model = tmp_path / "model"
    shutil.copytree(reference_dir(), model)
    config = json.loads((model / "config.json").read_text())
    del config["flip_average"]
    (model / "config.json").write_text(json.dumps(config))
    assert load_model(str(model), device="cpu").config.flip_average is False
    assert ModelConfig().flip_average  # new models validate and score with it


def _video(path, size: int, frames: int = 12) -> str:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (size, size))
    for i in range(frames):
        writer.write(np.full((size, size, 3), 40 + 10 * i, np.uint8))
    writer.release()
    return str(path)


def test_frames_too_small_for_a_face_are_no_face(tmp_path):
    model = load_model("reference", device="cpu")
    detector = faces.get_face_detector(model.config.face_detector, "cpu")
    assert detector.detect(np.zeros((16, 16, 3), np.uint8)) == []
    row = score_video(_video(tmp_path / "tiny.mp4", 16), detector, model,
                      ScoreConfig(data=(), out="unused", frames=4), 0.5)
    assert row["status"] == "no_face" and row["prob"] == 0.5


def test_weights_that_give_nan_are_an_error_never_ok(tmp_path, shared_data):
    model_dir = tmp_path / "model"
    shutil.copytree(reference_dir(), model_dir)
    state = torch.load(model_dir / "model.pt", weights_only=True)
    head = next(k for k in state if k.startswith("classification_head") and "weight" in k)
    state[head] = torch.full_like(state[head], float("nan"))
    torch.save(state, model_dir / "model.pt")
    model = load_model(str(model_dir), device="cpu")
    detector = faces.get_face_detector(model.config.face_detector, "cpu")
    row = score_video(str(shared_data / "videos" / "dfdc" / "lynaeydofd.mp4"), detector, model,
                      ScoreConfig(data=(), out="unused", frames=4), 0.5)
    assert row["status"] == "error" and "nan" in row["message"] and row["prob"] == 0.5
