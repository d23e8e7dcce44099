"""MesoNet-4 and MesoInception-4 (Afchar et al., WIFS 2018) in PyTorch, with their published
Keras 2 HDF5 weights (``../shared/models/mesonet``), as peers for the detector benchmark.

Conventions: input crops are RGB ``uint8`` faces of any size, resized to 256 x 256 and scaled
to [0, 1]; the networks output one sigmoid, the probability that the face is REAL;
:func:`mesonet_fake_probability` turns it into the project's fake probability.

Porting notes: Keras conv kernels are ``H x W x in x out`` (PyTorch: ``out x in x H x W``),
dense kernels ``in x out``; BatchNorm epsilon is 1e-3; "same" padding with odd kernels is
symmetric; Flatten runs over ``height, width, channels`` (channels last), so features are
permuted before flattening. The files hold weights only: layers are matched by kind (conv2d,
batch_normalization, dense) in the order Keras created them (the number in their names).
"""

from __future__ import annotations

import re

import cv2
import numpy as np
import torch
from torch import nn

SIZE = 256
BN_EPS = 1e-3


def _conv(c_in: int, c_out: int, kernel: int, dilation: int = 1) -> nn.Conv2d:
    """A stride-1 conv with Keras "same" padding (odd kernel)."""
    return nn.Conv2d(c_in, c_out, kernel, padding=dilation * (kernel - 1) // 2, dilation=dilation)


class _Head(nn.Module):
    """Flatten (Keras order), dropout, dense 16, LeakyReLU(0.1), dropout, dense 1, sigmoid."""

    def __init__(self, features: int):
        super().__init__()
        self.drop1, self.dense1 = nn.Dropout(0.5), nn.Linear(features, 16)
        self.drop2, self.dense2 = nn.Dropout(0.5), nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1).flatten(1)
        x = nn.functional.leaky_relu(self.dense1(self.drop1(x)), 0.1)
        return torch.sigmoid(self.dense2(self.drop2(x))).squeeze(1)


class _ConvBlock(nn.Module):
    """Conv ("same"), ReLU, BatchNorm, max-pool."""

    def __init__(self, c_in: int, c_out: int, kernel: int, pool: int):
        super().__init__()
        self.conv, self.bn = _conv(c_in, c_out, kernel), nn.BatchNorm2d(c_out, BN_EPS)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.max_pool2d(self.bn(torch.relu(self.conv(x))), self.pool)


class Meso4(nn.Module):
    """MesoNet-4: four conv blocks, then the dense head. Returns P(real) per image."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(_ConvBlock(3, 8, 3, 2), _ConvBlock(8, 8, 5, 2),
                                    _ConvBlock(8, 16, 5, 2), _ConvBlock(16, 16, 5, 4))
        self.head = _Head(8 * 8 * 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x))


class _Inception(nn.Module):
    """Four branches concatenated in this order: 1x1 (a); 1x1 then 3x3 (b); 1x1 then 3x3
    dilated 2 (c); 1x1 then 3x3 dilated 3 (d); every conv followed by ReLU."""

    def __init__(self, c_in: int, a: int, b: int, c: int, d: int):
        super().__init__()
        self.branch1 = _conv(c_in, a, 1)
        self.branch2 = nn.ModuleList([_conv(c_in, b, 1), _conv(b, b, 3)])
        self.branch3 = nn.ModuleList([_conv(c_in, c, 1), _conv(c, c, 3, dilation=2)])
        self.branch4 = nn.ModuleList([_conv(c_in, d, 1), _conv(d, d, 3, dilation=3)])

    def convs(self) -> list[nn.Conv2d]:
        """The convs in the order Keras created them."""
        return [self.branch1, *self.branch2, *self.branch3, *self.branch4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [torch.relu(self.branch1(x))]
        for first, second in (self.branch2, self.branch3, self.branch4):
            outs.append(torch.relu(second(torch.relu(first(x)))))
        return torch.cat(outs, 1)


class MesoInception4(nn.Module):
    """MesoInception-4: two inception blocks (1-4-4-2, 2-4-4-2), each BatchNorm and max-pool
    2, then two conv blocks and the head as in Meso4. Returns P(real) per image."""

    def __init__(self):
        super().__init__()
        self.inc1, self.bn1 = _Inception(3, 1, 4, 4, 2), nn.BatchNorm2d(11, BN_EPS)
        self.inc2, self.bn2 = _Inception(11, 2, 4, 4, 2), nn.BatchNorm2d(12, BN_EPS)
        self.blocks = nn.Sequential(_ConvBlock(12, 16, 5, 2), _ConvBlock(16, 16, 5, 4))
        self.head = _Head(8 * 8 * 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(self.bn1(self.inc1(x)), 2)
        x = nn.functional.max_pool2d(self.bn2(self.inc2(x)), 2)
        return self.head(self.blocks(x))


def read_keras_weights(path: str) -> dict[str, list[dict[str, np.ndarray]]]:
    """The layers of a Keras 2 weights file by kind (``conv2d``, ``batch_normalization``,
    ``dense``), each kind's layers in creation order, each layer as ``{weight name: array}``
    (``kernel``, ``bias``, ``gamma``, ``beta``, ``moving_mean``, ``moving_variance``)."""
    import h5py  # noqa: PLC0415 - only the benchmark needs it

    layers: dict[str, list[tuple[int, dict[str, np.ndarray]]]] = {}
    with h5py.File(path, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f
        for raw in root.attrs["layer_names"]:
            name = raw.decode()
            names = [n.decode() for n in root[name].attrs["weight_names"]]
            if not names:
                continue
            kind, number = re.fullmatch(r"(.+?)(?:_(\d+))?", name).groups()
            weights = {n.split("/")[-1].split(":")[0]: np.asarray(root[name][n]) for n in names}
            layers.setdefault(kind, []).append((int(number or 0), weights))
    return {kind: [w for _, w in sorted(found, key=lambda t: t[0])]
            for kind, found in layers.items()}


def _set(param: torch.Tensor, value: np.ndarray) -> None:
    if tuple(param.shape) != value.shape:
        raise ValueError(f"weight shape {value.shape} does not fit {tuple(param.shape)}")
    param.data.copy_(torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))


def _load_conv(conv: nn.Conv2d, w: dict[str, np.ndarray]) -> None:
    _set(conv.weight, w["kernel"].transpose(3, 2, 0, 1))
    _set(conv.bias, w["bias"])


def _load_bn(bn: nn.BatchNorm2d, w: dict[str, np.ndarray]) -> None:
    _set(bn.weight, w["gamma"])
    _set(bn.bias, w["beta"])
    _set(bn.running_mean, w["moving_mean"])
    _set(bn.running_var, w["moving_variance"])


def _load_dense(linear: nn.Linear, w: dict[str, np.ndarray]) -> None:
    _set(linear.weight, w["kernel"].T)
    _set(linear.bias, w["bias"])


def _load(model: nn.Module, convs: list[nn.Conv2d], bns: list[nn.BatchNorm2d], path: str
          ) -> nn.Module:
    """Fill ``model``'s convs, BatchNorms and dense layers (each list in Keras creation
    order) from ``path``; a file with other layer counts or shapes is a ValueError."""
    layers = read_keras_weights(path)
    denses = [model.head.dense1, model.head.dense2]
    for kind, modules, loader in (("conv2d", convs, _load_conv),
                                  ("batch_normalization", bns, _load_bn),
                                  ("dense", denses, _load_dense)):
        found = layers.get(kind, [])
        if len(found) != len(modules):
            raise ValueError(f"{path}: {len(found)} {kind} layers, expected {len(modules)}")
        for module, weights in zip(modules, found):
            loader(module, weights)
    return model.eval()


def load_meso4(path: str) -> Meso4:
    """MesoNet-4 with the weights of a Keras file such as ``Meso4_DF.h5``, in eval mode."""
    model = Meso4()
    return _load(model, [b.conv for b in model.blocks], [b.bn for b in model.blocks], path)


def load_mesoinception4(path: str) -> MesoInception4:
    """MesoInception-4 with the weights of a Keras file such as ``MesoInception_DF.h5``,
    in eval mode."""
    model = MesoInception4()
    convs = [*model.inc1.convs(), *model.inc2.convs(), *(b.conv for b in model.blocks)]
    bns = [model.bn1, model.bn2, *(b.bn for b in model.blocks)]
    return _load(model, convs, bns, path)


def to_input(crops: list[np.ndarray]) -> torch.Tensor:
    """RGB ``uint8`` crops resized to 256 x 256 with ``INTER_AREA`` (also when enlarging: it
    reproduces the dev-crop scores in the facts file exactly, where bilinear moves Meso4_DF's
    AUC by 0.006), as an NCHW float tensor in [0, 1]."""
    arr = np.stack([cv2.resize(c, (SIZE, SIZE), interpolation=cv2.INTER_AREA) for c in crops])
    return torch.from_numpy(arr.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)


def mesonet_fake_probability(model: nn.Module, crops: list[np.ndarray],
                             batch_size: int = 64) -> np.ndarray:
    """Fake probability (1 - P(real)) of each RGB ``uint8`` crop: a float32 array."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(crops), batch_size):
            out.append(1.0 - model(to_input(crops[start:start + batch_size])).numpy())
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)
