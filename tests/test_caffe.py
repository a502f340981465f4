"""The Caffe converter, checked against an independent forward pass of the same raw blobs.

The .caffemodel files are written here from known random weights through the same schema, in the
2015+ ``layer`` format (N-d ``shape`` blobs), the 2014 ``layers`` format (4-d num/channels/height/width
blobs, biases 1×1×1×N) and the early-2014 V0 form. The two networks below are transcribed from the
authors' train_val.prototxt gists (CIFAR-10: gist e56253735ef32c3c296d; ImageNet: gist
d802a5849de39225bcc6). ``caffe_forward`` interprets them with ``torch.nn.functional`` directly on the
raw blobs, with Caffe's pooling rules written out (output size rounded up, average over the part of the
window inside the image), in float64: it shares no code with the converter.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("google.protobuf")

from nin.inference import caffe_schema as schema  # noqa: E402
from nin.inference.caffe import CaffeError, convert_caffemodel, convert_command, extract_features, read_caffemodel  # noqa: E402


def conv(name: str, out: int, k: int, s: int = 1, p: int = 0) -> dict:
    return {"name": name, "type": "conv", "out": out, "k": k, "s": s, "p": p}


def relu(name: str) -> dict:
    return {"name": name, "type": "relu"}


def pool(name: str, method: str, k: int, s: int) -> dict:
    return {"name": name, "type": "pool", "method": method, "k": k, "s": s}


def drop(name: str) -> dict:
    return {"name": name, "type": "dropout"}


CIFAR10_NET = [
    conv("conv1", 192, 5, p=2), relu("relu1"), conv("cccp1", 160, 1), relu("relu_cccp1"), conv("cccp2", 96, 1),
    relu("relu_cccp2"), pool("pool1", "MAX", 3, 2), drop("drop3"),
    conv("conv2", 192, 5, p=2), relu("relu2"), conv("cccp3", 192, 1), relu("relu_cccp3"), conv("cccp4", 192, 1),
    relu("relu_cccp4"), pool("pool2", "AVE", 3, 2), drop("drop6"),
    conv("conv3", 192, 3, p=1), relu("relu3"), conv("cccp5", 192, 1), relu("relu_cccp5"), conv("cccp6", 10, 1),
    relu("relu_cccp6"), pool("pool3", "AVE", 8, 1),
]
IMAGENET_NET = [
    conv("conv1", 96, 11, s=4), relu("relu0"), conv("cccp1", 96, 1), relu("relu1"), conv("cccp2", 96, 1),
    relu("relu2"), pool("pool0", "MAX", 3, 2),
    conv("conv2", 256, 5, p=2), relu("relu3"), conv("cccp3", 256, 1), relu("relu5"), conv("cccp4", 256, 1),
    relu("relu6"), pool("pool2", "MAX", 3, 2),
    conv("conv3", 384, 3, p=1), relu("relu7"), conv("cccp5", 384, 1), relu("relu8"), conv("cccp6", 384, 1),
    relu("relu9"), pool("pool3", "MAX", 3, 2), drop("drop"),
    conv("conv4-1024", 1024, 3, p=1), relu("relu10"), conv("cccp7-1024", 1024, 1), relu("relu11"),
    conv("cccp8-1024", 1000, 1), relu("relu12"), pool("pool4", "AVE", 6, 1),
]
NETS = {"cifar10": (CIFAR10_NET, 32), "imagenet": (IMAGENET_NET, 224)}


def random_weights(spec: list[dict], seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """He-scaled random weights and clearly non-zero biases, (out, in, k, k) as Caffe stores them."""
    rng = np.random.default_rng(seed)
    weights, channels = {}, 3
    for layer in spec:
        if layer["type"] == "conv":
            shape = (layer["out"], channels, layer["k"], layer["k"])
            std = math.sqrt(2.0 / (channels * layer["k"] ** 2))
            weights[layer["name"]] = ((rng.standard_normal(shape, dtype=np.float32) * std),
                                      (rng.standard_normal(layer["out"], dtype=np.float32) * 0.1))
            channels = layer["out"]
    return weights


_V1_TYPES = {"conv": "CONVOLUTION", "relu": "RELU", "pool": "POOLING", "dropout": "DROPOUT", "data": "DATA",
             "loss": "SOFTMAX_LOSS"}
_NEW_TYPES = {"conv": "Convolution", "relu": "ReLU", "pool": "Pooling", "dropout": "Dropout", "data": "Data",
              "loss": "SoftmaxWithLoss"}
_V0_TYPES = {"conv": "conv", "relu": "relu", "pool": "pool", "dropout": "dropout", "data": "data",
             "loss": "softmax_loss"}


def _fill_blob(blob, array: np.ndarray, fmt: str) -> None:
    if fmt == "layer":
        blob.shape.dim.extend(array.shape)
    else:  # 2014: always 4-d, a bias is 1×1×1×N
        shape = array.shape if array.ndim == 4 else (1, 1, 1, array.size)
        blob.num, blob.channels, blob.height, blob.width = shape
    blob.data.extend(array.ravel().tolist())


def write_caffemodel(path: Path, spec: list[dict], weights: dict, fmt: str, name: str = "nin") -> Path:
    """A .caffemodel as Caffe writes it: data layer, the network, a loss layer; weights in ``fmt``."""
    net = schema.NetParameter(name=name)
    layers = [{"name": "data", "type": "data"}, *spec, {"name": "loss", "type": "loss"}]
    blob_name = "data"
    for entry in layers:
        kind = entry["type"]
        if fmt == "layer":
            layer = net.layer.add(name=entry["name"], type=_NEW_TYPES[kind])
            params, blobs = layer, layer.blobs
        elif fmt == "v1":
            layer = net.layers.add(name=entry["name"], type=getattr(schema.V1LayerParameter, _V1_TYPES[kind]))
            params, blobs = layer, layer.blobs
        else:
            layer = net.layers.add()
            layer.layer.name, layer.layer.type = entry["name"], _V0_TYPES[kind]
            params, blobs = layer.layer, layer.layer.blobs
        if kind == "data":
            layer.top.extend(["data", "label"])
            continue
        layer.bottom.append(blob_name)
        if kind == "loss":
            layer.bottom.append("label")
            continue
        if kind in ("conv", "pool"):
            blob_name = entry["name"]
        layer.top.append(blob_name)  # ReLU and dropout work in place, as in the prototxt
        if kind == "conv":
            if fmt == "v0":
                params.num_output, params.kernelsize, params.stride, params.pad = (entry["out"], entry["k"],
                                                                                   entry["s"], entry["p"])
            else:
                p = params.convolution_param
                p.num_output = entry["out"]
                p.kernel_size.append(entry["k"])
                if entry["s"] != 1:
                    p.stride.append(entry["s"])
                if entry["p"]:
                    p.pad.append(entry["p"])
                p.weight_filler.type, p.weight_filler.std = "gaussian", 0.05
            for array in weights[entry["name"]]:
                _fill_blob(blobs.add(), array, fmt)
        elif kind == "pool":
            if fmt == "v0":
                params.pool = getattr(schema.V0LayerParameter, entry["method"])
                params.kernelsize, params.stride = entry["k"], entry["s"]
            else:
                p = params.pooling_param
                p.pool = getattr(schema.PoolingParameter, entry["method"])
                p.kernel_size, p.stride = entry["k"], entry["s"]
    path.write_bytes(net.SerializeToString())
    return path


def caffe_pool(x: torch.Tensor, method: str, k: int, s: int) -> torch.Tensor:
    """Caffe's PoolingLayer (pad 0): ceil-rounded output size; AVE divides by the window's part inside the map."""
    n, c, height, width = x.shape
    out_h, out_w = math.ceil((height - k) / s) + 1, math.ceil((width - k) / s) + 1
    out = x.new_empty(n, c, out_h, out_w)
    for i in range(out_h):
        h0, h1 = i * s, min(i * s + k, height)
        for j in range(out_w):
            w0, w1 = j * s, min(j * s + k, width)
            window = x[:, :, h0:h1, w0:w1]
            if method == "MAX":
                out[:, :, i, j] = window.amax(dim=(2, 3))
            else:
                out[:, :, i, j] = window.sum(dim=(2, 3)) / ((h1 - h0) * (w1 - w0))
    return out


def caffe_forward(spec: list[dict], weights: dict, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The prototxt's test-phase forward pass on the raw blobs, in float64; also every layer's output."""
    h = x.double()
    outputs = {}
    for layer in spec:
        if layer["type"] == "conv":
            w, b = weights[layer["name"]]
            h = F.conv2d(h, torch.from_numpy(w).double(), torch.from_numpy(b).double(), stride=layer["s"],
                         padding=layer["p"])
        elif layer["type"] == "relu":
            h = torch.clamp(h, min=0.0)
        elif layer["type"] == "pool":
            h = caffe_pool(h, layer["method"], layer["k"], layer["s"])
        outputs[layer["name"]] = h  # dropout: identity in the test phase
    return h.flatten(1), outputs


def assert_matches(ours: torch.Tensor, reference: torch.Tensor) -> None:
    reference = reference.to(ours.dtype)
    scale = reference.abs().max().item()
    assert scale > 0
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4 * scale)


@pytest.fixture(scope="module")
def weights() -> dict[str, dict]:
    return {"cifar10": random_weights(CIFAR10_NET, 10), "imagenet": random_weights(IMAGENET_NET, 1000)}


@pytest.fixture(scope="module")
def files(tmp_path_factory, weights):
    """Write (and cache) one file per (network, format)."""
    folder = tmp_path_factory.mktemp("caffe")
    cache: dict[tuple[str, str], Path] = {}

    def get(net: str, fmt: str) -> Path:
        if (net, fmt) not in cache:
            cache[net, fmt] = write_caffemodel(folder / f"{net}-{fmt}.caffemodel", NETS[net][0], weights[net], fmt)
        return cache[net, fmt]
    return get


@pytest.fixture(scope="module")
def imagenet_v1(files):
    return convert_caffemodel(files("imagenet", "v1"))


@pytest.fixture(scope="module")
def imagenet_input() -> torch.Tensor:
    return torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(3))


# ------------------------------------------------------------------------------------------------ outputs


@pytest.mark.parametrize("fmt", ["layer", "v1", "v0"])
def test_cifar10_output_equals_caffe_forward(files, weights, fmt):
    path = files("cifar10", fmt)
    conversion = convert_caffemodel(path)  # architecture detected
    assert conversion.model_name == "nin_cifar10_caffe" and conversion.num_classes == 10
    assert conversion.caffe_format == {"layer": "layer", "v1": "layers (V1)", "v0": "layers (V0)"}[fmt]
    assert not conversion.model.training
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    reference, _ = caffe_forward(CIFAR10_NET, weights["cifar10"], x)
    with torch.no_grad():
        assert_matches(conversion.model(x), reference)


@pytest.mark.parametrize("fmt", ["layer", "v1"])
def test_imagenet_output_equals_caffe_forward(files, weights, imagenet_v1, imagenet_input, fmt):
    conversion = imagenet_v1 if fmt == "v1" else convert_caffemodel(files("imagenet", fmt), architecture="imagenet")
    assert conversion.model_name == "nin_imagenet" and conversion.num_classes == 1000
    assert conversion.input_size == (3, 224, 224)
    reference, _ = caffe_forward(IMAGENET_NET, weights["imagenet"], imagenet_input)
    assert (reference > 0).double().mean() > 0.2  # the comparison is not between two nearly-zero outputs
    with torch.no_grad():
        assert_matches(conversion.model(imagenet_input), reference)


def test_the_comparison_catches_swapped_layers_and_transposed_kernels(tmp_path, weights):
    """cccp3 and cccp4 have the same shape, so only the outputs can tell them apart; same for a flipped kernel."""
    original = weights["cifar10"]
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    reference, _ = caffe_forward(CIFAR10_NET, original, x)
    swapped = {**original, "cccp3": original["cccp4"], "cccp4": original["cccp3"]}
    transposed = {**original, "conv2": (np.ascontiguousarray(original["conv2"][0].transpose(0, 1, 3, 2)),
                                        original["conv2"][1])}
    no_bias = {**original, "conv1": (original["conv1"][0], np.zeros_like(original["conv1"][1]))}
    for name, wrong in {"swapped": swapped, "transposed": transposed, "no_bias": no_bias}.items():
        model = convert_caffemodel(write_caffemodel(tmp_path / f"{name}.caffemodel", CIFAR10_NET, wrong, "v1")).model
        with torch.no_grad():
            out = model(x)
        assert not torch.allclose(out, reference.float(), rtol=1e-3, atol=1e-3 * reference.abs().max().item()), name


def test_read_caffemodel_returns_layers_in_order_with_their_blobs(files, weights):
    for fmt in ("layer", "v1"):
        net = read_caffemodel(files("cifar10", fmt))
        assert [layer.name for layer in net.layers] == ["data"] + [e["name"] for e in CIFAR10_NET] + ["loss"]
        conv2 = net.get("conv2")
        assert conv2.type == "Convolution" and net.get("relu_cccp6").type == "ReLU"
        assert conv2.params["kernel"] == (5, 5) and conv2.params["pad"] == (2, 2)
        np.testing.assert_array_equal(conv2.blobs[0], weights["cifar10"]["conv2"][0])
        expected_bias_shape = (192,) if fmt == "layer" else (1, 1, 1, 192)
        assert conv2.shapes == [(192, 96, 5, 5), expected_bias_shape]
        np.testing.assert_array_equal(conv2.blobs[1].ravel(), weights["cifar10"]["conv2"][1])
        assert [layer.name for layer in net.learnable] == [e["name"] for e in CIFAR10_NET if e["type"] == "conv"]


# ----------------------------------------------------------------------------------------------- features


def test_features_at_neural_style_layers_equal_caffe_blobs(imagenet_v1, weights, imagenet_input):
    _, blobs = caffe_forward(IMAGENET_NET, weights["imagenet"], imagenet_input)
    wanted = ["relu0", "relu3", "relu7", "relu12", "conv1", "cccp3"]
    images = imagenet_input.clone().requires_grad_(True)
    features = extract_features(imagenet_v1.model, images, imagenet_v1.layer_names, wanted)
    assert list(features) == wanted
    for name in wanted:  # conv1 and cccp3: the value before the in-place ReLU, as the Caffe layer produced it
        assert_matches(features[name].detach(), blobs[name])
    assert (features["conv1"] < 0).any()  # not overwritten by relu0, which ran after it
    features["relu7"].sum().backward()  # style-transfer losses differentiate with respect to the image
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(not m._forward_hooks for m in imagenet_v1.model.modules())


def test_features_stop_after_the_last_wanted_layer_and_refuse_unknown_names(imagenet_v1, imagenet_input):
    calls = []
    last = dict(imagenet_v1.model.named_modules())[imagenet_v1.layer_names["cccp8-1024"]]
    handle = last.register_forward_hook(lambda *_: calls.append(1))
    try:
        with torch.no_grad():
            features = extract_features(imagenet_v1.model, imagenet_input, imagenet_v1.layer_names, ["relu0"])
    finally:
        handle.remove()
    assert features["relu0"].shape == (1, 96, 54, 54) and not calls
    with pytest.raises(CaffeError, match="relu4"):  # the gist has no relu4
        extract_features(imagenet_v1.model, imagenet_input, imagenet_v1.layer_names, ["relu4"])


def test_layer_names_follow_the_prototxt(imagenet_v1, files):
    names = imagenet_v1.layer_names
    assert names["conv1"] == "features.0.layers.0" and names["relu0"] == "features.0.layers.1"
    assert names["cccp8-1024"] == "features.7.layers.4" and names["relu12"] == "features.7.layers.5"
    assert names["pool0"] == "features.1" and names["drop"] == "features.6" and names["pool4"] == "head.pool"
    cifar = convert_caffemodel(files("cifar10", "layer")).layer_names
    assert cifar["relu_cccp6"] == "features.6.layers.5" and cifar["pool2"] == "features.4"
    assert cifar["drop6"] == "features.5" and cifar["pool3"] == "head.pool"


# ------------------------------------------------------------------------------------------------- errors


def _other_protobuf() -> bytes:
    from google.protobuf import descriptor_pb2

    return descriptor_pb2.FileDescriptorProto(name="other.proto", package="other").SerializeToString()


def _mean_file() -> bytes:
    blob = schema.BlobProto(num=1, channels=3, height=4, width=4)
    blob.data.extend([100.0] * 48)
    return blob.SerializeToString()


@pytest.mark.parametrize("content, what", [
    (bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)), "not a .caffemodel"),
    (b"name: \"nin\"\nlayers {\n  name: \"conv1\"\n  type: CONVOLUTION\n}\n", "text prototxt"),
    (b"just some notes\n", "text file"),
    (b"<!DOCTYPE html><html><body>Dropbox</body></html>", "web page"),
    (b"", "empty"),
    (_mean_file(), "single Caffe blob"),
    (_other_protobuf(), "not a .caffemodel"),
    (schema.NetParameter(name="solver").SerializeToString(), "holds no Caffe layers"),
    (schema.NetParameter(name="deploy", layer=[schema.LayerParameter(name="relu", type="ReLU")]).SerializeToString(),
     "holds no weights"),
])
def test_not_a_caffemodel(tmp_path, content, what):
    path = tmp_path / "model.caffemodel"
    path.write_bytes(content)
    with pytest.raises(CaffeError) as err:
        convert_caffemodel(path)
    assert str(path) in str(err.value) and what in str(err.value)
    assert isinstance(err.value, ValueError)


def test_missing_file(tmp_path):
    with pytest.raises(CaffeError, match="does not exist"):
        read_caffemodel(tmp_path / "absent.caffemodel")


def test_missing_layer(tmp_path, weights):
    spec = [e for e in CIFAR10_NET if e["name"] not in ("cccp3", "relu_cccp3")]
    path = write_caffemodel(tmp_path / "m.caffemodel", spec, weights["cifar10"], "v1")
    for architecture in (None, "nin_cifar10_caffe"):
        with pytest.raises(CaffeError, match="'cccp3'.* missing"):
            convert_caffemodel(path, architecture)


def test_wrong_blob_shape(tmp_path, weights):
    w = dict(weights["cifar10"])
    w["cccp4"] = (np.zeros((192, 160, 1, 1), np.float32), w["cccp4"][1])
    path = write_caffemodel(tmp_path / "m.caffemodel", CIFAR10_NET, w, "layer")
    with pytest.raises(CaffeError) as err:
        convert_caffemodel(path)
    message = str(err.value)
    assert "'cccp4'" in message and "(192, 160, 1, 1)" in message and "(192, 192, 1, 1)" in message


def test_extra_learnable_layer_and_wrong_geometry_and_wrong_architecture(tmp_path, weights):
    w = {**weights["cifar10"], "fc9": (np.zeros((10, 10, 1, 1), np.float32), np.zeros(10, np.float32))}
    extra = write_caffemodel(tmp_path / "extra.caffemodel", [*CIFAR10_NET, conv("fc9", 10, 1)], w, "v1")
    with pytest.raises(CaffeError, match="'fc9'"):
        convert_caffemodel(extra)
    spec = [dict(e, p=1) if e["name"] == "conv2" else e for e in CIFAR10_NET]  # pad 1 instead of 2: same blobs
    padded = write_caffemodel(tmp_path / "pad.caffemodel", spec, weights["cifar10"], "layer")
    with pytest.raises(CaffeError, match=r"'conv2' has pad \(1, 1\).*\(2, 2\)"):
        convert_caffemodel(padded)
    spec = [dict(e, method="MAX") if e["name"] == "pool2" else e for e in CIFAR10_NET]  # the paper's max pool2
    max_pool = write_caffemodel(tmp_path / "max.caffemodel", spec, weights["cifar10"], "v1")
    with pytest.raises(CaffeError, match="'pool2' has pool MAX"):
        convert_caffemodel(max_pool)
    with pytest.raises(CaffeError, match="unknown architecture 'vgg16'"):
        convert_caffemodel(extra, architecture="vgg16")
    with pytest.raises(CaffeError, match="conv4-1024"):
        convert_caffemodel(write_caffemodel(tmp_path / "c.caffemodel", CIFAR10_NET, weights["cifar10"], "v1"),
                           architecture="imagenet")


# ---------------------------------------------------------------------------------------------- round trip


def test_convert_command_round_trip_fits_gcn_zca_on_all_training_images(tmp_path, files, monkeypatch):
    """The converter fits GCN + ZCA on the split of all 50,000 training images and ships it with the weights.

    ZCA's own fit (an eigendecomposition of 3072×3072, seconds on a busy CPU) is tested with the
    preprocessing; here a stand-in records what it was fitted on and stores tensors that must survive the
    round trip."""
    import nin.inference.caffe
    from nin.data import ZCA
    from nin.inference.weights import load_weights

    calls, fitted_on = [], []
    images = torch.from_numpy(np.random.default_rng(5).integers(0, 256, (64, 3, 32, 32), dtype=np.uint8))
    classes = [f"c{i}" for i in range(10)]

    def fake_load_dataset(name, split, root=None, download=False):
        calls.append((name, split, root))
        return SimpleNamespace(images=images, classes=classes)

    def recording_fit(self, x):
        fitted_on.append(x.clone())
        flat = x.reshape(len(x), -1).float()
        self.mean, self.whitening = flat.mean(dim=0), torch.diag(flat.std(dim=0))
        return self

    monkeypatch.setattr(nin.inference.caffe, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(ZCA, "fit", recording_fit)
    source = files("cifar10", "v1")
    out = tmp_path / "nin_cifar10_caffe.safetensors"
    written = convert_command(source, out, data_dir=tmp_path / "data")
    assert written == [out, out.with_suffix(".json"), tmp_path / "nin_cifar10_caffe.caffe.json"]
    assert calls == [("cifar10", "train+valid", tmp_path / "data")]

    trained = load_weights(out)
    assert trained.classes == classes and trained.dataset == "cifar10"
    # trained on all 50,000 training images, so nin eval warns on 'valid', which is among them
    assert trained.recipe["train_split"] == "train+valid"
    direct = convert_caffemodel(source).model
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(trained.model(x), direct(x), rtol=0, atol=0)
    assert [s["name"] for s in trained.preprocess.to_spec()["steps"]] == ["gcn", "zca"]
    flat = images.reshape(64, -1).double()  # pylearn2's GCN (scale 55) by hand: ZCA is fitted on its output
    flat = flat - flat.mean(dim=1, keepdim=True)
    gcn = flat * (55.0 / flat.norm(dim=1, keepdim=True))
    assert len(fitted_on) == 1
    torch.testing.assert_close(fitted_on[0].reshape(64, -1).double(), gcn, rtol=0, atol=1e-4)
    zca = trained.preprocess.steps[1]
    torch.testing.assert_close(zca.mean.double(), gcn.mean(dim=0), rtol=0, atol=1e-5)
    torch.testing.assert_close(zca.whitening.diagonal().double(), gcn.std(dim=0), rtol=1e-4, atol=1e-5)

    record = json.loads((tmp_path / "nin_cifar10_caffe.caffe.json").read_text())
    assert record["sha1"] == hashlib.sha1(source.read_bytes()).hexdigest()
    assert record["layer_names"]["relu_cccp6"] == "features.6.layers.5"
    assert record["preprocess"] == ["gcn", "zca"]


def test_convert_command_imagenet_ships_caffes_channel_order_and_mean(tmp_path, files):
    """The ImageNet weights take RGB pixels: the weights' own preprocessing turns them into Caffe's B, G, R
    minus the mean pixel, so a converter that forgot the channel swap or the mean fails here."""
    from nin.inference.weights import load_weights

    out = tmp_path / "nin_imagenet.safetensors"
    convert_command(files("imagenet", "layer"), out)
    record = json.loads((tmp_path / "nin_imagenet.caffe.json").read_text())
    assert record["preprocess"][0] == {"name": "bgr"}
    assert record["preprocess"][1]["name"] == "channel_mean" and len(record["preprocess"][1]["mean"]) == 3
    trained = load_weights(out)
    assert len(trained.classes) == 1000 and trained.input_size == (3, 224, 224)
    rgb = torch.zeros(1, 3, 2, 2)
    rgb[0, 0], rgb[0, 1], rgb[0, 2] = 200.0, 100.0, 50.0  # R, G, B
    mean_bgr = (104.0069879317889, 116.66876761696767, 122.6789143406786)  # Caffe's ILSVRC mean pixel
    expected = torch.tensor([50.0 - mean_bgr[0], 100.0 - mean_bgr[1], 200.0 - mean_bgr[2]])
    torch.testing.assert_close(trained.preprocess(rgb)[0, :, 0, 0], expected)
    with pytest.raises(CaffeError, match=r"\.safetensors"):
        convert_command(files("imagenet", "layer"), tmp_path / "weights.pt")
