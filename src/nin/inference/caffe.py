"""Convert the authors' Caffe model-zoo ``.caffemodel`` files into our registered networks.

The authors published two trained NINs in the Caffe model zoo, each a GitHub gist by mavenlin with a
``train_val.prototxt`` and a link to the weights:

- CIFAR-10, gist ``e56253735ef32c3c296d`` ("Network in Network CIFAR10 Model",
  https://gist.github.com/mavenlin/e56253735ef32c3c296d): ``cifar10_nin.caffemodel``, reported 89.6%
  accuracy. Layers ``conv1 cccp1 cccp2 pool1 drop3 conv2 cccp3 cccp4 pool2 drop6 conv3 cccp5 cccp6
  pool3`` with ReLUs ``relu1 relu_cccp1 relu_cccp2 relu2 relu_cccp3 relu_cccp4 relu3 relu_cccp5
  relu_cccp6``; ``pool2`` is an average pool; ``pool3`` averages the 8×8 maps. Our ``nin_cifar10_caffe``.
- ImageNet, gist ``d802a5849de39225bcc6`` ("Network in Network Imagenet Model",
  https://gist.github.com/mavenlin/d802a5849de39225bcc6): ``nin_imagenet.caffemodel`` (neural-style
  uses the same network as ``nin_imagenet_conv.caffemodel``), reported 59.36% top-1. Layers ``conv1
  cccp1 cccp2 pool0 conv2 cccp3 cccp4 pool2 conv3 cccp5 cccp6 pool3 drop conv4-1024 cccp7-1024
  cccp8-1024 pool4`` with ReLUs ``relu0 relu1 relu2 relu3 relu5 relu6 relu7 relu8 relu9 relu10 relu11
  relu12`` (there is no ``relu4``); ``pool4`` averages the 6×6 maps. Our ``nin_imagenet``.

Layers are matched by these names, never by position, and every blob's shape and every convolution's
and pooling's geometry recorded in the file is checked against our module, so a file of another
network fails with the layer's name and both shapes instead of loading into the wrong places.
``docs/convert.md`` says where to get the files and what to expect.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from google.protobuf.message import DecodeError  # noqa: E402  (after the schema, which says how to install it)
from torch import nn

from nin.data import build_pipeline, load_dataset
from nin.errors import NinError
from nin.inference import caffe_schema as schema
from nin.inference.trained import TrainedModel
from nin.inference.weights import save_weights
from nin.layers import GlobalAvgPool
from nin.models import create_model, model_info
from nin.utils.atomic import atomic_write_text

_WHAT_TO_DO = ("A .caffemodel is the binary weights file of a trained Caffe network (cifar10_nin.caffemodel, "
               "about 4 MB, or nin_imagenet_conv.caffemodel, about 30 MB); docs/convert.md says where to download "
               "the authors' files.")


class CaffeError(NinError, ValueError):
    """A Caffe file that cannot be read or does not fit our network; the message names the file, the layer and
    what to do."""


# ----------------------------------------------------------------------------------------------- reading


@dataclass
class CaffeLayer:
    """One layer of a Caffe net: its name and type as in the prototxt, its blobs in Caffe's own shapes
    (float32 arrays; a convolution has [weight (out, in, kh, kw), bias]), and the geometry the file records
    (``params``: kernel, stride, pad, ... when the file has them)."""

    name: str
    type: str
    bottom: list[str]
    top: list[str]
    blobs: list[np.ndarray]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """The blobs' shapes, as Caffe stored them."""
        return [tuple(b.shape) for b in self.blobs]


@dataclass
class CaffeNet:
    """A parsed ``.caffemodel``: every layer in the file's order (data, loss and accuracy layers included)."""

    path: Path
    name: str
    format: str  # "layer" (2015 on), "layers (V1)" (2014) or "layers (V0)" (early 2014)
    layers: list[CaffeLayer]

    def get(self, name: str) -> CaffeLayer | None:
        """The first layer called ``name``, or None."""
        return next((layer for layer in self.layers if layer.name == name), None)

    @property
    def learnable(self) -> list[CaffeLayer]:
        """The layers that hold weights, in order."""
        return [layer for layer in self.layers if layer.blobs]


_V1_TYPE_NAMES = {"CONVOLUTION": "Convolution", "RELU": "ReLU", "POOLING": "Pooling", "DROPOUT": "Dropout",
                  "DATA": "Data", "INNER_PRODUCT": "InnerProduct", "SOFTMAX": "Softmax",
                  "SOFTMAX_LOSS": "SoftmaxWithLoss", "ACCURACY": "Accuracy", "LRN": "LRN", "CONCAT": "Concat",
                  "SPLIT": "Split", "NONE": "unknown"}
_V0_TYPE_NAMES = {"conv": "Convolution", "relu": "ReLU", "pool": "Pooling", "dropout": "Dropout", "data": "Data",
                  "innerproduct": "InnerProduct", "softmax": "Softmax", "softmax_loss": "SoftmaxWithLoss",
                  "accuracy": "Accuracy", "lrn": "LRN"}


def _pair(values: Sequence[int], h: int | None, w: int | None, default: int) -> tuple[int, int]:
    """Caffe's kernel/stride/pad rule: explicit _h/_w, else one value for both or one per dimension."""
    if h is not None and w is not None:
        return int(h), int(w)
    values = [int(v) for v in values]
    if not values:
        return default, default
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def _filler(message: Any, field_name: str) -> dict[str, Any] | None:
    if not message.HasField(field_name):
        return None
    filler = getattr(message, field_name)
    out: dict[str, Any] = {"type": filler.type}
    if filler.type == "gaussian":
        out.update(mean=float(filler.mean), std=float(filler.std))
    elif filler.type == "constant":
        out["value"] = float(filler.value)
    return out


def _conv_params(p: Any) -> dict[str, Any]:
    opt = lambda name: getattr(p, name) if p.HasField(name) else None  # noqa: E731
    explicit_pad = p.HasField("pad_h") or p.HasField("pad_w")
    pad = (int(p.pad_h), int(p.pad_w)) if explicit_pad else _pair(p.pad, None, None, 0)
    return {"num_output": int(p.num_output), "kernel": _pair(p.kernel_size, opt("kernel_h"), opt("kernel_w"), 0),
            "stride": _pair(p.stride, opt("stride_h"), opt("stride_w"), 1), "pad": pad, "group": int(p.group),
            "bias_term": bool(p.bias_term), "dilation": _pair(p.dilation, None, None, 1),
            "weight_filler": _filler(p, "weight_filler"), "bias_filler": _filler(p, "bias_filler")}


def _pool_params(p: Any) -> dict[str, Any]:
    opt = lambda name: getattr(p, name) if p.HasField(name) else None  # noqa: E731
    kernel = _pair([p.kernel_size] if p.HasField("kernel_size") else [], opt("kernel_h"), opt("kernel_w"), 0)
    stride = _pair([p.stride], opt("stride_h"), opt("stride_w"), 1)
    pad = (int(p.pad_h), int(p.pad_w)) if p.HasField("pad_h") or p.HasField("pad_w") else (int(p.pad), int(p.pad))
    return {"pool": schema.PoolingParameter.PoolMethod.Name(p.pool), "kernel": kernel, "stride": stride, "pad": pad,
            "global_pooling": bool(p.global_pooling),
            "round_mode": schema.PoolingParameter.RoundMode.Name(p.round_mode)}


def _blob_array(blob: Any, path: Path, layer: str, index: int) -> np.ndarray:
    shape = tuple(int(d) for d in blob.shape.dim) if blob.HasField("shape") else (
        int(blob.num), int(blob.channels), int(blob.height), int(blob.width))
    if len(blob.data):
        values = np.asarray(blob.data, dtype=np.float32)
    elif len(blob.double_data):
        values = np.asarray(blob.double_data, dtype=np.float64).astype(np.float32)
    else:
        values = np.zeros(0, dtype=np.float32)
    count = math.prod(shape) if all(d >= 0 for d in shape) else -1
    if values.size != count:
        raise CaffeError(f"{path}: blob {index} of layer {layer!r} holds {values.size} values but its shape {shape} "
                         f"needs {count}: the file is damaged or truncated. {_WHAT_TO_DO}")
    return np.array(values, dtype=np.float32, copy=True).reshape(shape)


def _layer(message: Any, kind: str, path: Path) -> CaffeLayer:
    """A CaffeLayer from a LayerParameter ("layer"), a V1LayerParameter ("v1") or a V1 wrapping a V0 ("v0")."""
    params: dict[str, Any] = {}
    if kind == "v0":
        v0 = message.layer
        name, type_name, blobs = v0.name, _V0_TYPE_NAMES.get(v0.type, v0.type), v0.blobs
        if type_name == "Convolution":
            params = {"num_output": int(v0.num_output), "kernel": (int(v0.kernelsize),) * 2,
                      "stride": (int(v0.stride),) * 2, "pad": (int(v0.pad),) * 2, "group": int(v0.group),
                      "bias_term": bool(v0.biasterm), "dilation": (1, 1),
                      "weight_filler": _filler(v0, "weight_filler"), "bias_filler": _filler(v0, "bias_filler")}
        elif type_name == "Pooling":
            params = {"pool": schema.V0LayerParameter.PoolMethod.Name(v0.pool), "kernel": (int(v0.kernelsize),) * 2,
                      "stride": (int(v0.stride),) * 2, "pad": (int(v0.pad),) * 2, "global_pooling": False,
                      "round_mode": "CEIL"}
    else:
        name, blobs = message.name, message.blobs
        if kind == "v1":
            enum_name = schema.V1LayerParameter.LayerType.Name(message.type)
            type_name = _V1_TYPE_NAMES.get(enum_name, enum_name)
        else:
            type_name = message.type
        if message.HasField("convolution_param"):
            params = _conv_params(message.convolution_param)
        elif message.HasField("pooling_param"):
            params = _pool_params(message.pooling_param)
        elif message.HasField("relu_param"):
            params = {"negative_slope": float(message.relu_param.negative_slope)}
    arrays = [_blob_array(blob, path, name, i) for i, blob in enumerate(blobs)]
    return CaffeLayer(str(name), str(type_name), list(message.bottom), list(message.top), arrays, params)


def _looks_like_text(data: bytes) -> bool:
    head = data[:4096].decode("utf-8", errors="replace")
    if head.count("\ufffd") > 3:
        return False
    printable = sum(ch.isprintable() or ch in "\t\n\r" for ch in head)
    return printable >= 0.98 * len(head)


def _not_a_caffemodel(path: Path, data: bytes) -> CaffeError:
    """The error for a file with no Caffe layers: say what it seems to be instead."""
    try:
        blob = schema.BlobProto.FromString(data)
        if len(blob.data) or len(blob.double_data):
            shape = tuple(blob.shape.dim) if blob.HasField("shape") else (blob.num, blob.channels, blob.height,
                                                                          blob.width)
            return CaffeError(f"{path} is a single Caffe blob of shape {shape} (such as a mean image "
                              f".binaryproto), not a .caffemodel. {_WHAT_TO_DO}")
    except Exception:  # noqa: BLE001 - any parse failure just means "not a blob either"
        pass
    return CaffeError(f"{path} parses as a protobuf message but holds no Caffe layers, so it is not a .caffemodel "
                      f"(a solver state or another program's file?). {_WHAT_TO_DO}")


def read_caffemodel(path: str | os.PathLike) -> CaffeNet:
    """Read a ``.caffemodel`` of any Caffe era: layers in order with their blobs as float32 arrays.

    Reads the new ``layer`` list and the 2014 ``layers`` list (with the 4-d num/channels/height/width
    blob form and the later ``shape`` form), without Caffe. Anything that is not a caffemodel raises
    :class:`CaffeError` saying what the file seems to be and what to do.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CaffeError(f"{path} does not exist. {_WHAT_TO_DO}") from None
    except OSError as err:
        raise CaffeError(f"{path}: cannot read it ({err.strerror or err}). {_WHAT_TO_DO}") from None
    if not data:
        raise CaffeError(f"{path} is empty (0 bytes), probably an interrupted download. {_WHAT_TO_DO}")
    if _looks_like_text(data):
        text = data[:4096].decode("utf-8", errors="replace").lower()
        if "<html" in text or "<!doctype" in text:
            raise CaffeError(f"{path} is a web page, not a .caffemodel: the download link returned HTML (for "
                             f"Dropbox links end the address with ?dl=1). {_WHAT_TO_DO}")
        if "layer" in text and "{" in text:
            raise CaffeError(f"{path} is a text prototxt (a network definition such as train_val.prototxt), not the "
                             f"binary .caffemodel with the trained weights; pass the .caffemodel (it names its "
                             f"layers itself, so the prototxt is not needed).")
        raise CaffeError(f"{path} is a text file, not a binary .caffemodel. {_WHAT_TO_DO}")
    try:
        net = schema.NetParameter.FromString(data)
    except (DecodeError, RuntimeError, ValueError) as err:
        raise CaffeError(f"{path} is not a .caffemodel: it does not parse as Caffe's NetParameter protobuf "
                         f"({err}). {_WHAT_TO_DO}") from None
    if len(net.layer) and len(net.layers):
        raise CaffeError(f"{path} holds both the new 'layer' and the old 'layers' lists; Caffe refuses such files "
                         f"too. Re-save it with Caffe's upgrade_net_proto_binary tool.")
    try:
        if len(net.layer):
            fmt, layers = "layer", [_layer(m, "layer", path) for m in net.layer]
        else:
            old = list(net.layers)
            fmt = "layers (V0)" if any(m.HasField("layer") for m in old) else "layers (V1)"
            layers = [_layer(m, "v0" if m.HasField("layer") else "v1", path) for m in old]
    except (UnicodeDecodeError, ValueError) as err:
        if isinstance(err, CaffeError):
            raise
        raise CaffeError(f"{path} is not a .caffemodel: its layers do not decode ({err}). {_WHAT_TO_DO}") from None
    if not layers:
        raise _not_a_caffemodel(path, data)
    if not any(layer.blobs for layer in layers):
        raise CaffeError(f"{path} describes {len(layers)} layers but holds no weights: it is a network definition "
                         f"saved in binary form, not trained weights. {_WHAT_TO_DO}")
    return CaffeNet(path, str(net.name), fmt, layers)


# -------------------------------------------------------------------------------------------- converting


@dataclass(frozen=True)
class _Architecture:
    """One model-zoo network: its layer names in the prototxt's order and what its weights expect."""

    model_name: str
    dataset: str
    convs: tuple[str, ...]
    relus: tuple[str, ...]
    pools: tuple[str, ...]
    dropouts: tuple[str, ...]
    prototxt: str
    reported: str
    preprocess: tuple[str | Mapping[str, Any], ...]
    fit_on: tuple[str, str] | None


# Caffe's per-channel ILSVRC-2012 training mean in B, G, R order: the spatial mean of
# python/caffe/imagenet/ilsvrc_2012_mean.npy, printed in BVLC/caffe examples/00-classification.ipynb
# (commit 9b891540183ddc834a02b2bd81b31afae71b2153). The authors subtracted their own mean image
# ("imagenet-train-mean" in train_val.prototxt), which was not published.
IMAGENET_BGR_MEAN = (104.0069879317889, 116.66876761696767, 122.6789143406786)

_CIFAR10 = _Architecture(
    model_name="nin_cifar10_caffe", dataset="cifar10",
    convs=("conv1", "cccp1", "cccp2", "conv2", "cccp3", "cccp4", "conv3", "cccp5", "cccp6"),
    relus=("relu1", "relu_cccp1", "relu_cccp2", "relu2", "relu_cccp3", "relu_cccp4", "relu3", "relu_cccp5",
           "relu_cccp6"),
    pools=("pool1", "pool2", "pool3"), dropouts=("drop3", "drop6"),
    prototxt="https://gist.github.com/mavenlin/e56253735ef32c3c296d (train_val.prototxt)",
    reported="89.6% accuracy on the CIFAR-10 test images (the gist's README; its train_val.prototxt tests on "
             "cifar-test-leveldb)",
    # The authors trained on their pylearn2-preprocessed leveldb: GCN (scale 55) then ZCA (filter_bias 0.1)
    # fitted on the 50,000 training images, in RGB order.
    preprocess=("gcn", "zca"), fit_on=("cifar10", "train+valid"),
)
_IMAGENET = _Architecture(
    model_name="nin_imagenet", dataset="imagenet",
    convs=("conv1", "cccp1", "cccp2", "conv2", "cccp3", "cccp4", "conv3", "cccp5", "cccp6", "conv4-1024",
           "cccp7-1024", "cccp8-1024"),
    relus=("relu0", "relu1", "relu2", "relu3", "relu5", "relu6", "relu7", "relu8", "relu9", "relu10", "relu11",
           "relu12"),
    pools=("pool0", "pool2", "pool3", "pool4"), dropouts=("drop",),
    prototxt="https://gist.github.com/mavenlin/d802a5849de39225bcc6 (train_val.prototxt)",
    reported="59.36% top-1 on the ILSVRC-2012 validation set, center 224 crops (the gist's README)",
    # Caffe reads images as B, G, R on 0..255 and the prototxt subtracts the training mean; crops are 224×224
    # (of 256×256 images).
    preprocess=({"name": "bgr"}, {"name": "channel_mean", "mean": list(IMAGENET_BGR_MEAN)}), fit_on=None,
)
ARCHITECTURES: dict[str, _Architecture] = {a.model_name: a for a in (_CIFAR10, _IMAGENET)}
_ALIASES = {"cifar10": "nin_cifar10_caffe", "imagenet": "nin_imagenet"}
ARCHITECTURE_NAMES = tuple(sorted(ARCHITECTURES)) + tuple(sorted(_ALIASES))


@dataclass
class CaffeConversion:
    """A converted network and everything needed to use it as the authors did.

    ``preprocess`` is the preprocessing the weights expect, as a recipe-style list; when
    ``fit_preprocess_on`` is set it must be fitted on that (dataset, split) first (CIFAR-10: GCN + ZCA on
    all 50,000 training images). ``layer_names`` maps the prototxt's layer names, the in-place ReLUs
    included, to our module paths, for :func:`extract_features`.
    """

    model_name: str
    model_args: dict[str, Any]
    model: nn.Module
    num_classes: int
    input_size: tuple[int, int, int]
    dataset: str
    preprocess: list[str | dict[str, Any]]
    fit_preprocess_on: tuple[str, str] | None
    layer_names: dict[str, str]
    source: Path
    caffe_format: str
    prototxt: str
    reported: str


def _resolve_architecture(architecture: str) -> _Architecture:
    name = _ALIASES.get(architecture, architecture)
    if name not in ARCHITECTURES:
        raise CaffeError(f"unknown architecture {architecture!r}; the authors' Caffe models are "
                         f"{', '.join(ARCHITECTURE_NAMES)}")
    return ARCHITECTURES[name]


def _squeezed(shape: Iterable[int]) -> tuple[int, ...]:
    return tuple(int(d) for d in shape if d != 1)


def _modules_by_kind(model: nn.Module) -> dict[str, list[tuple[str, nn.Module]]]:
    """Our convolutions, ReLUs, poolings and dropouts, each in forward order (the NIN is a plain chain)."""
    kinds: dict[str, list[tuple[str, nn.Module]]] = defaultdict(list)
    for path, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            kinds["conv"].append((path, module))
        elif isinstance(module, nn.ReLU):
            kinds["relu"].append((path, module))
        elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, GlobalAvgPool)):
            kinds["pool"].append((path, module))
        elif isinstance(module, nn.Dropout):
            kinds["dropout"].append((path, module))
    return kinds


def _expected_shapes(arch: _Architecture, num_classes: int | None = None) -> dict[str, tuple[tuple[int, ...], ...]]:
    """Weight and bias shapes of each of the architecture's layers, from our registered model (on the meta device)."""
    with torch.device("meta"):
        model = create_model(arch.model_name, **({} if num_classes is None else {"num_classes": num_classes}))
    convs = _modules_by_kind(model)["conv"]
    return {name: tuple(tuple(p.shape) for p in (m.weight, m.bias) if p is not None)
            for name, (_, m) in zip(arch.convs, convs)}


def _detect(net: CaffeNet) -> _Architecture:
    """The architecture whose layers the file has most of, with fitting shapes (the class count may differ)."""
    learnable = {layer.name: layer for layer in net.learnable}
    scores = {}
    for arch in ARCHITECTURES.values():
        expected = _expected_shapes(arch)
        score = 0
        for name, shapes in expected.items():
            layer = learnable.get(name)
            if layer is None or not layer.blobs:
                continue
            got, want = _squeezed(layer.blobs[0].shape), _squeezed(shapes[0])
            if got == want or (name == arch.convs[-1] and got[1:] == want[1:]):
                score += 1
        scores[arch.model_name] = score
    best = max(scores.values())
    winners = [name for name, score in scores.items() if score == best]
    if best == 0:
        raise CaffeError(f"{net.path}: none of its learnable layers ({', '.join(learnable) or 'none'}) is a layer of "
                         f"the authors' NIN models (CIFAR-10: {', '.join(_CIFAR10.convs)}; ImageNet: "
                         f"{', '.join(_IMAGENET.convs)}), so it is not one of their model-zoo files")
    if len(winners) > 1:
        raise CaffeError(f"{net.path} fits {' and '.join(winners)} equally well; say which with architecture=")
    return ARCHITECTURES[winners[0]]


def _check_conv(path: Path, layer: CaffeLayer, module_path: str, conv: nn.Conv2d, model_name: str) -> None:
    p = layer.params
    if not p:  # e.g. the authors' CCCP layers, which have no convolution_param: the blob shapes decide
        return
    checks = [("kernel", tuple(p["kernel"]), tuple(conv.kernel_size)), ("stride", tuple(p["stride"]), conv.stride),
              ("pad", tuple(p["pad"]), tuple(conv.padding)), ("group", p["group"], conv.groups),
              ("dilation", tuple(p["dilation"]), tuple(conv.dilation)),
              ("bias_term", p["bias_term"], conv.bias is not None)]
    for what, got, want in checks:
        if what == "kernel" and got == (0, 0):
            continue  # a 1×1 CCCP layer stored as a convolution without kernel_size: blob shapes decide
        if tuple(np.atleast_1d(got)) != tuple(np.atleast_1d(want)):
            raise CaffeError(f"{path}: layer {layer.name!r} has {what} {got} but {model_name}'s {module_path} has "
                             f"{want}: the file is not the authors' {model_name} network")


def _check_pool(path: Path, layer: CaffeLayer, module_path: str, pool: nn.Module, model_name: str) -> None:
    p = layer.params
    if not p:
        return
    if isinstance(pool, nn.MaxPool2d):
        want = {"pool": "MAX", "kernel": (pool.kernel_size,) * 2, "stride": (pool.stride,) * 2, "pad": (0, 0),
                "round_mode": "CEIL" if pool.ceil_mode else "FLOOR"}
    elif isinstance(pool, nn.AvgPool2d):
        want = {"pool": "AVE", "kernel": (pool.kernel_size,) * 2, "stride": (pool.stride,) * 2, "pad": (0, 0),
                "round_mode": "CEIL" if pool.ceil_mode else "FLOOR"}
    else:  # global average pooling: Caffe's kernel equals the last maps' size (8 or 6) with stride 1
        want = {"pool": "AVE", "stride": (1, 1), "pad": (0, 0)}
        if p.get("global_pooling"):
            want.pop("stride")
    for what, value in want.items():
        got = p.get(what)
        if tuple(np.atleast_1d(got)) != tuple(np.atleast_1d(value)):
            raise CaffeError(f"{path}: pooling layer {layer.name!r} has {what} {got} but {model_name}'s "
                             f"{module_path} has {value}: the file is not the authors' {model_name} network")


def _fit_blob(path: Path, layer: CaffeLayer, index: int, target: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The blob as a tensor of ``shape``; Caffe's older forms (bias 1×1×1×N, CCCP weights 1×1×out×in) are
    accepted when they hold the same dimensions in the same order."""
    what = "weight" if index == 0 else "bias"
    if index >= len(layer.blobs):
        raise CaffeError(f"{path}: layer {layer.name!r} has {len(layer.blobs)} blob(s) but {target} needs a {what} "
                         f"of shape {shape}: the file is not the authors' network or is damaged")
    array = layer.blobs[index]
    if tuple(array.shape) != tuple(shape) and _squeezed(array.shape) != _squeezed(shape):
        raise CaffeError(f"{path}: layer {layer.name!r} {what} has shape {tuple(array.shape)} but {target} needs "
                         f"{tuple(shape)}: the file is not the authors' network (or another variant of it)")
    return torch.from_numpy(np.ascontiguousarray(array.reshape(shape)))


def _names_in_file(net: CaffeNet, type_name: str, count: int, default: tuple[str, ...]) -> tuple[str, ...]:
    """The file's own names for its ReLU / pooling / dropout layers in order, when it has as many as we do."""
    names = tuple(layer.name for layer in net.layers if layer.type == type_name)
    return names if len(names) == count else default


def convert_caffemodel(path: str | os.PathLike, architecture: str | None = None) -> CaffeConversion:
    """Load the authors' ``.caffemodel`` into our registered network, matched by the prototxt's layer names.

    ``architecture`` (``nin_cifar10_caffe`` / ``cifar10`` or ``nin_imagenet`` / ``imagenet``) is detected
    from the layer names and shapes when not given. A missing layer, an extra learnable layer, a blob of
    another shape or a convolution / pooling of another geometry raises :class:`CaffeError` naming the
    layer and both values. The returned model is in eval mode.
    """
    chosen = _resolve_architecture(architecture) if architecture is not None else None
    net = read_caffemodel(path)
    arch = chosen if chosen is not None else _detect(net)
    learnable: dict[str, CaffeLayer] = {}
    for layer in net.learnable:
        if layer.name in learnable:
            raise CaffeError(f"{net.path}: two learnable layers are called {layer.name!r}; Caffe names are unique")
        learnable[layer.name] = layer
    extra = [name for name in learnable if name not in arch.convs]
    if extra:
        raise CaffeError(f"{net.path}: learnable layer(s) {', '.join(map(repr, extra))} have no place in "
                         f"{arch.model_name}, whose layers are {', '.join(arch.convs)} ({arch.prototxt})")
    missing = [name for name in arch.convs if name not in learnable]
    if missing:
        have = ", ".join(learnable) or "none"
        raise CaffeError(f"{net.path}: layer(s) {', '.join(map(repr, missing))} of {arch.model_name} are missing "
                         f"(the file's learnable layers: {have}); it is not the authors' complete model "
                         f"({arch.prototxt})")
    last = learnable[arch.convs[-1]]
    default_classes = model_info(arch.model_name).num_classes
    num_classes = int(last.blobs[1].size) if len(last.blobs) > 1 else default_classes
    model = create_model(arch.model_name, **({} if num_classes == default_classes else {"num_classes": num_classes}))
    kinds = _modules_by_kind(model)
    if len(kinds["conv"]) != len(arch.convs):
        raise RuntimeError(f"{arch.model_name} has {len(kinds['conv'])} convolutions but the prototxt "
                           f"{len(arch.convs)}: the registered model changed; update nin.inference.caffe")

    state = {}
    for name, (module_path, conv) in zip(arch.convs, kinds["conv"]):
        layer = learnable[name]
        _check_conv(net.path, layer, module_path, conv, arch.model_name)
        state[f"{module_path}.weight"] = _fit_blob(net.path, layer, 0, f"{arch.model_name}'s {module_path}",
                                                   tuple(conv.weight.shape))
        if conv.bias is not None:
            state[f"{module_path}.bias"] = _fit_blob(net.path, layer, 1, f"{arch.model_name}'s {module_path}",
                                                     tuple(conv.bias.shape))
        if len(layer.blobs) > 1 + (conv.bias is not None):
            raise CaffeError(f"{net.path}: layer {layer.name!r} has {len(layer.blobs)} blobs; a convolution has a "
                             f"weight and a bias")
    uncovered = sorted(set(model.state_dict()) - set(state))
    if uncovered:
        raise RuntimeError(f"{arch.model_name} has tensors the Caffe model does not fill: {', '.join(uncovered)}")
    model.load_state_dict(state, strict=True)

    layer_names = {name: module_path for name, (module_path, _) in zip(arch.convs, kinds["conv"])}
    for kind, type_name, default in (("relu", "ReLU", arch.relus), ("pool", "Pooling", arch.pools),
                                     ("dropout", "Dropout", arch.dropouts)):
        ours = kinds[kind]
        if len(ours) != len(default):
            raise RuntimeError(f"{arch.model_name} has {len(ours)} {kind} modules but the prototxt {len(default)}")
        names = _names_in_file(net, type_name, len(ours), default)
        for name, (module_path, module) in zip(names, ours):
            layer = net.get(name)
            if layer is not None and kind == "pool":
                _check_pool(net.path, layer, module_path, module, arch.model_name)
            if layer is not None and kind == "relu" and layer.params.get("negative_slope", 0.0) != 0.0:
                raise CaffeError(f"{net.path}: ReLU layer {name!r} has negative_slope "
                                 f"{layer.params['negative_slope']} but {arch.model_name}'s {module_path} is a plain "
                                 f"ReLU")
            layer_names[name] = module_path

    info = model_info(arch.model_name)
    return CaffeConversion(
        model_name=arch.model_name, model_args={}, model=model.eval(), num_classes=num_classes,
        input_size=tuple(info.input_size), dataset=arch.dataset,
        preprocess=[p if isinstance(p, str) else dict(p) for p in arch.preprocess],
        fit_preprocess_on=arch.fit_on, layer_names=layer_names, source=net.path, caffe_format=net.format,
        prototxt=arch.prototxt, reported=arch.reported)


# ---------------------------------------------------------------------------------------------- features


class _Captured(Exception):
    """Raised by the last hook to skip the rest of the forward pass."""


def extract_features(model: nn.Module, images: torch.Tensor, layer_names_map: Mapping[str, str],
                     wanted: Sequence[str]) -> dict[str, torch.Tensor]:
    """Outputs of the layers named as in the prototxt (``relu0``, ``relu3``, ``relu7``, ``relu12``, ...).

    As in Caffe, a ReLU layer's output is the rectified blob and a convolution's is the value before its
    ReLU. The tensors are copies (our ReLUs work in place, like Caffe's) and keep their autograd graph, so
    a style-transfer loss can be differentiated with respect to ``images``. The forward pass stops after
    the last wanted layer. ``layer_names_map`` is :attr:`CaffeConversion.layer_names`.
    """
    if not wanted:
        return {}
    unknown = [name for name in wanted if name not in layer_names_map]
    if unknown:
        raise CaffeError(f"unknown layer name(s) {', '.join(map(repr, unknown))}; this network's layers are "
                         f"{', '.join(layer_names_map)}")
    modules = dict(model.named_modules())
    by_path: dict[str, list[str]] = defaultdict(list)
    for name in dict.fromkeys(wanted):
        module_path = layer_names_map[name]
        if module_path not in modules:
            raise CaffeError(f"layer {name!r} maps to {module_path!r}, which this model does not have: the map "
                             f"belongs to another network")
        by_path[module_path].append(name)
    captured: dict[str, torch.Tensor] = {}
    remaining = set(by_path)

    def hook_for(module_path: str):
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            for name in by_path[module_path]:
                captured[name] = output.clone()
            remaining.discard(module_path)
            if not remaining:
                raise _Captured
        return hook

    handles = [modules[p].register_forward_hook(hook_for(p)) for p in by_path]
    try:
        model(images)
    except _Captured:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return {name: captured[name] for name in wanted}


# ------------------------------------------------------------------------------------------------ command

def _read_classes(path: str | os.PathLike, num_classes: int) -> list[str]:
    try:
        names = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except OSError as err:
        raise CaffeError(f"{path}: cannot read the class names ({err.strerror or err})") from None
    if len(names) != num_classes:
        raise CaffeError(f"{path} names {len(names)} classes but the network has {num_classes} outputs; give one "
                         f"name per line, in output order")
    return names


def _file_sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _save_with_preprocessing(conversion: CaffeConversion, out: Path, data_dir: str | os.PathLike | None,
                             classes: list[str] | None) -> list[Path]:
    """Fit the preprocessing and write the weights through the package's weights format.

    Returns the written paths: the weights and their sidecar.
    """
    pipeline = build_pipeline(conversion.preprocess)
    recipe = {"name": f"caffe:{conversion.source.name}"}
    if conversion.fit_preprocess_on is not None:
        dataset, split = conversion.fit_preprocess_on
        data = load_dataset(dataset, split, root=data_dir)
        pipeline.fit(data.images)
        classes = classes or list(data.classes)
        recipe["train_split"] = split  # the authors fitted their preprocessing on the images they trained on
    classes = classes or [f"class_{i:04d}" for i in range(conversion.num_classes)]
    trained = TrainedModel(conversion.model, conversion.model_name, conversion.model_args, pipeline, classes,
                           conversion.dataset, conversion.input_size, recipe, [])
    record = save_weights(trained, out)
    assert record.sidecar is not None
    return [out, record.sidecar]


def convert_command(file: str | os.PathLike, out: str | os.PathLike, data_dir: str | os.PathLike | None = None,
                    architecture: str | None = None, classes: str | os.PathLike | None = None) -> list[Path]:
    """``nin convert caffe FILE --out WEIGHTS.safetensors``: convert, fit the preprocessing, write the weights.

    CIFAR-10's GCN + ZCA is fitted on all 50,000 training images (``load_dataset("cifar10",
    "train+valid")`` under ``data_dir``), as the authors' pylearn2 data was. Writes WEIGHTS.safetensors, its
    sidecar WEIGHTS.json (``nin.inference.weights`` format) and WEIGHTS.caffe.json (the source file's SHA-1, the
    layer-name map, the preprocessing as a recipe list). Returns the written paths.
    """
    out = Path(out)
    if out.suffix != ".safetensors":
        raise CaffeError(f"{out}: the weights file must end in .safetensors")
    conversion = convert_caffemodel(file, architecture)
    names = _read_classes(classes, conversion.num_classes) if classes is not None else None
    written = _save_with_preprocessing(conversion, out, data_dir, names)
    record = {
        "source": str(conversion.source), "sha1": _file_sha1(conversion.source),
        "caffe_format": conversion.caffe_format, "model_name": conversion.model_name,
        "num_classes": conversion.num_classes, "input_size": list(conversion.input_size),
        "prototxt": conversion.prototxt, "reported_by_authors": conversion.reported,
        "preprocess": conversion.preprocess, "preprocess_fitted_on": conversion.fit_preprocess_on,
        "layer_names": conversion.layer_names,
    }
    caffe_record = out.with_name(f"{out.stem}.caffe.json")
    atomic_write_text(caffe_record, json.dumps(record, indent=2) + "\n")
    return [*written, caffe_record]


__all__ = ["ARCHITECTURES", "ARCHITECTURE_NAMES", "IMAGENET_BGR_MEAN",
           "CaffeConversion", "CaffeError", "CaffeLayer", "CaffeNet", "convert_caffemodel",
           "convert_command", "extract_features", "read_caffemodel"]
