"""Preprocessing against independent float64 NumPy implementations written here from the formulas."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from nin.data.preprocess import (
    GCN,
    LCN,
    ZCA,
    MeanImage,
    Pipeline,
    Standardize,
    ToUnitRange,
    build_pipeline,
    gaussian_kernel,
)

# ------------------------------------------------------------------------------- NumPy references


def gcn_ref(x: np.ndarray, scale: float = 55.0, min_norm: float = 1e-8) -> np.ndarray:
    flat = x.reshape(len(x), -1).astype(np.float64)
    flat = flat - flat.mean(axis=1, keepdims=True)
    norm = np.sqrt((flat ** 2).sum(axis=1, keepdims=True))
    norm[norm < min_norm] = 1.0
    return (scale * flat / norm).reshape(x.shape)


def zca_ref(train: np.ndarray, filter_bias: float) -> tuple[np.ndarray, np.ndarray]:
    flat = train.reshape(len(train), -1).astype(np.float64)
    mean = flat.mean(axis=0)
    centered = flat - mean
    cov = centered.T @ centered / len(flat) + filter_bias * np.eye(flat.shape[1])
    eigenvalues, eigenvectors = np.linalg.eigh(cov)
    return mean, eigenvectors @ np.diag(1.0 / np.sqrt(eigenvalues)) @ eigenvectors.T


def lcn_ref(x: np.ndarray, size: int = 7, threshold: float = 1e-4) -> np.ndarray:
    """pylearn2's lecun_lcn, per channel: Gaussian (sigma 2) weighted sums with zero padding."""
    mid = size // 2
    kernel = np.array([[np.exp(-((i - mid) ** 2 + (j - mid) ** 2) / 8.0) for j in range(size)] for i in range(size)])
    kernel /= kernel.sum()
    x = x.astype(np.float64)
    n, c, h, w = x.shape

    def blur(a: np.ndarray) -> np.ndarray:
        padded = np.pad(a, ((0, 0), (0, 0), (mid, mid), (mid, mid)))
        return sum(kernel[i, j] * padded[:, :, i:i + h, j:j + w] for i in range(size) for j in range(size))

    centered = x - blur(x)
    denom = np.sqrt(blur(x ** 2))
    per_image = denom.mean(axis=(2, 3), keepdims=True)
    divisor = np.maximum(np.maximum(per_image, denom), threshold)
    return centered / divisor


def standardize_ref(train: np.ndarray, x: np.ndarray) -> np.ndarray:
    train = train.astype(np.float64)
    mean = train.mean(axis=(0, 2, 3), keepdims=True)
    std = train.std(axis=(0, 2, 3), keepdims=True)
    return (x.astype(np.float64) - mean) / std


def rel_err(a: torch.Tensor | np.ndarray, b: np.ndarray) -> float:
    a = a.numpy() if isinstance(a, torch.Tensor) else a
    return float(np.abs(a.astype(np.float64) - b).max() / np.abs(b).max())


# ----------------------------------------------------------------------------------------- data

@pytest.fixture(scope="module")
def cifar_batch1(shared_path) -> np.ndarray:
    """The first 2,000 images of the shared lossless CIFAR-10 batch 1, read here with pickle (uint8 NCHW)."""
    with open(shared_path("cifar-10-lossless-train-batches-py", "data_batch_1"), "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    return np.ascontiguousarray(batch[b"data"][:2000].reshape(-1, 3, 32, 32))


def center_crops(images: np.ndarray) -> np.ndarray:
    """The central 16×16 of each image: 768 values, so the float64 eigendecompositions stay fast."""
    return np.ascontiguousarray(images[:, :, 8:24, 8:24])


@pytest.fixture(scope="module")
def zca_fit(cifar_batch1):
    """ZCA fitted by the code and by the reference on GCN'd crops of images 0-1,499."""
    train = gcn_ref(center_crops(cifar_batch1[:1500]))
    zca = ZCA(filter_bias=0.1).fit(torch.from_numpy(train).float())
    return train, zca, zca_ref(train, 0.1)


def random_images(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8))


# ---------------------------------------------------------------------------------------- tests

def test_unit_range():
    x = random_images((3, 1, 4, 4))
    out = ToUnitRange()(x)
    assert out.dtype == torch.float32 and torch.allclose(out, x.float() / 255)


def test_gcn_matches_reference_on_real_and_random_data(cifar_batch1):
    out = GCN()(torch.from_numpy(cifar_batch1))
    assert out.dtype == torch.float32 and out.shape == cifar_batch1.shape
    assert rel_err(out, gcn_ref(cifar_batch1)) < 1e-6
    norms = out.reshape(len(out), -1).double().norm(dim=1)
    assert torch.allclose(norms, torch.full_like(norms, 55.0))

    x = torch.randn(6, 2, 5, 5, dtype=torch.float64) * 30 + 100
    x[3] = 7.0  # a flat image: norm 0 is replaced by 1, so the output is zeros, not NaN
    out = GCN(scale=2.0)(x)
    assert rel_err(out, gcn_ref(x.numpy(), scale=2.0)) < 1e-6
    assert torch.equal(out[3], torch.zeros_like(out[3]))


def test_zca_matches_reference_on_real_data(cifar_batch1, zca_fit):
    train, zca, (mean, whitening) = zca_fit
    assert rel_err(zca.mean, mean) < 1e-6
    assert rel_err(zca.whitening, whitening) < 1e-5
    held_out = gcn_ref(center_crops(cifar_batch1[1500:]))  # fit on 1,500 images, apply to 500 others
    out = zca(torch.from_numpy(held_out).float())
    expected = (held_out.reshape(500, -1) - mean) @ whitening
    assert out.shape == held_out.shape and rel_err(out.reshape(500, -1), expected) < 1e-4


def test_zca_whitens_its_training_data(zca_fit):
    """cov(ZCA(train)) = P C₀ P with C₀ the training covariance and P = (C₀ + bias·I)^(−1/2), both computed here
    in float64 NumPy from the training images alone (not from the fitted matrix): catches a whitening matrix
    that is not the inverse square root of the regularised covariance, or a wrong bias."""
    train, zca, _ = zca_fit
    out = zca(torch.from_numpy(train).float()).reshape(len(train), -1).double()
    cov = torch.cov(out.T, correction=0).numpy()
    flat = train.reshape(len(train), -1).astype(np.float64)
    centered = flat - flat.mean(axis=0)
    c0 = centered.T @ centered / len(flat)
    eigenvalues, eigenvectors = np.linalg.eigh(c0 + 0.1 * np.eye(len(c0)))
    p = (eigenvectors / np.sqrt(eigenvalues)) @ eigenvectors.T
    expected = p @ c0 @ p
    assert np.abs(cov - expected).max() < 1e-3
    # and it is not the identity: the bias leaves the weak directions damped (filter_bias 0.1 at GCN scale)
    assert np.abs(expected - np.eye(len(c0))).max() > 0.1


def test_zca_on_random_data_gives_identity_covariance():
    rng = np.random.default_rng(1)
    mixing = rng.normal(size=(48, 48))
    x = (rng.normal(size=(20_000, 48)) @ mixing + 5).reshape(-1, 3, 4, 4)
    zca = ZCA(filter_bias=1e-6).fit(torch.from_numpy(x))
    mean, whitening = zca_ref(x, 1e-6)
    assert rel_err(zca.whitening, whitening) < 1e-5
    out = zca(torch.from_numpy(x)).reshape(len(x), -1).double()
    assert torch.allclose(torch.cov(out.T, correction=0), torch.eye(48, dtype=torch.float64), atol=1e-3)
    assert torch.allclose(zca.whitening, zca.whitening.T)  # ZCA's P is symmetric (unlike PCA whitening)


def test_lcn_matches_reference_on_every_channel(cifar_batch1):
    x = gcn_ref(cifar_batch1[:100])
    out = LCN()(torch.from_numpy(x).float())
    ref = lcn_ref(x)
    assert out.dtype == torch.float32 and rel_err(out, ref) < 1e-5
    for c in range(3):  # pylearn2 left channels 1 and 2 untouched; every channel is normalised here
        assert rel_err(out[:, c], ref[:, c]) < 1e-5 and not np.allclose(out[:, c].numpy(), x[:, c])
    random = random_images((4, 2, 9, 11), seed=2)
    assert rel_err(LCN(kernel_size=5, threshold=1.0)(random), lcn_ref(random.numpy(), 5, 1.0)) < 1e-5
    zeros = LCN()(torch.zeros(1, 3, 8, 8))
    assert torch.equal(zeros, torch.zeros_like(zeros))  # the threshold keeps flat regions finite


def test_lcn_kernel_is_pylearn2s_gaussian_filter():
    k = gaussian_kernel(7)
    assert k.shape == (7, 7) and abs(k.sum().item() - 1) < 1e-12
    ratio = (k[3, 3] / k[3, 5]).item()  # two pixels apart, sigma 2: exp(4 / 8)
    assert abs(ratio - np.exp(0.5)) < 1e-12
    with pytest.raises(ValueError, match="odd"):
        LCN(kernel_size=6)


def test_mean_image_matches_numpy_and_round_trips(cifar_batch1):
    train, test = cifar_batch1[:1500], cifar_batch1[1500:]
    step = MeanImage().fit(torch.from_numpy(train))
    expected = test.astype(np.float64) - train.astype(np.float64).mean(axis=0)
    out = step(torch.from_numpy(test))
    assert out.dtype == torch.float32 and rel_err(out, expected) < 1e-6
    rebuilt = Pipeline.from_spec(Pipeline([step]).to_spec())
    assert torch.equal(rebuilt(torch.from_numpy(test)), out)
    with pytest.raises(ValueError, match=r"fitted on images of shape \(3, 32, 32\).*\(1, 32, 32\)"):
        step(torch.zeros(2, 1, 32, 32))
    with pytest.raises(RuntimeError, match="MeanImage is not fitted"):
        MeanImage()(torch.from_numpy(test))


def test_standardize_matches_reference(cifar_batch1):
    train, test = cifar_batch1[:1500], cifar_batch1[1500:]
    s = Standardize().fit(torch.from_numpy(train))
    assert rel_err(s(torch.from_numpy(test)), standardize_ref(train, test)) < 1e-6
    out = s(torch.from_numpy(train)).double()
    assert torch.allclose(out.mean(dim=(0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(out.std(dim=(0, 2, 3), correction=0), torch.ones(3, dtype=torch.float64), atol=1e-5)
    constant = Standardize().fit(torch.full((4, 1, 2, 2), 9.0))
    assert torch.equal(constant(torch.full((1, 1, 2, 2), 9.0)), torch.zeros(1, 1, 2, 2))


def _plain(value: object) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return isinstance(value, (str, int, float, bool, torch.Tensor))


def test_pipeline_spec_round_trip(tmp_path):
    x = random_images((300, 3, 6, 6), seed=3)
    pipe = build_pipeline(["gcn", {"name": "zca", "filter_bias": 0.5}, "lcn", "standardize"]).fit(x)
    state = pipe.to_spec()
    assert _plain(state)
    torch.save({"preprocess": state}, tmp_path / "ckpt.pt")
    loaded = torch.load(tmp_path / "ckpt.pt", weights_only=True)["preprocess"]
    again = Pipeline.from_spec(loaded)
    assert repr(again) == repr(pipe) and again.steps[1].filter_bias == 0.5
    new = random_images((50, 3, 6, 6), seed=4)
    assert torch.equal(again(new), pipe(new))


def test_pipeline_fits_each_step_on_the_output_of_the_previous_ones():
    x = random_images((400, 3, 4, 4), seed=5)
    pipe = Pipeline([GCN(), ZCA(0.1), Standardize()], batch_size=64).fit(x)
    gcn = gcn_ref(x.numpy())
    mean, whitening = zca_ref(gcn, 0.1)
    assert rel_err(pipe.steps[1].whitening, whitening) < 1e-5
    whitened = ((gcn.reshape(400, -1) - mean) @ whitening).reshape(x.shape)
    expected = standardize_ref(whitened, whitened)
    out = pipe(x)
    assert out.dtype == torch.float32 and rel_err(out, expected) < 1e-4
    assert torch.allclose(Pipeline(pipe.steps, batch_size=7)(x), out, atol=1e-5)  # batching changes nothing


def test_pipeline_errors():
    with pytest.raises(ValueError, match="unknown preprocessing step 'whiten'.*unit, mean_image, gcn, zca, lcn, standardize"):
        build_pipeline(["whiten"])
    with pytest.raises(ValueError, match="'gcn' does not take bias; it takes scale, min_norm"):
        build_pipeline([{"name": "gcn", "bias": 1}])
    with pytest.raises(ValueError, match="no 'name'"):
        build_pipeline([{"filter_bias": 1}])
    with pytest.raises(RuntimeError, match="ZCA is not fitted"):
        build_pipeline(["gcn", "zca"])(random_images((2, 1, 2, 2)))
    with pytest.raises(ValueError, match="not a preprocessing pipeline"):
        Pipeline.from_spec({"steps": []})
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        GCN()(torch.zeros(3, 4))
    zca = ZCA().fit(torch.randn(10, 1, 2, 2))
    with pytest.raises(ValueError, match="fitted on 4 values per image"):
        zca(torch.randn(1, 1, 3, 3))


# ------------------------------------------------------------------------ chunked fits, one image, odd sigma

def test_fits_over_more_images_than_one_chunk_match_numpy():
    """5,000 images: more than the 4,096 that one fitting chunk holds, so a fit that kept only its last chunk
    (``total = ...`` for ``total += ...``) is caught; the numbers are checked against NumPy in float64."""
    x = random_images((5000, 2, 2, 3), seed=7)
    flat = x.numpy().reshape(5000, -1).astype(np.float64)
    mean_image = MeanImage().fit(x)
    assert rel_err(mean_image.mean, x.numpy().astype(np.float64).mean(axis=0)) < 1e-6
    standardize = Standardize().fit(x)
    reference = x.numpy().astype(np.float64)
    assert rel_err(standardize.mean, reference.mean(axis=(0, 2, 3))) < 1e-6
    assert rel_err(standardize.std, reference.std(axis=(0, 2, 3))) < 1e-6
    zca = ZCA(filter_bias=0.1).fit(x)
    mean, whitening = zca_ref(flat, 0.1)
    assert rel_err(zca.mean, mean) < 1e-6 and rel_err(zca.whitening, whitening) < 1e-5
    pipe = Pipeline([ZCA(filter_bias=0.1)]).fit(x)  # applied in batches of 4,096 too
    expected = (flat - mean) @ whitening
    assert rel_err(pipe(x).reshape(5000, -1), expected) < 1e-5


def test_standardize_fits_on_a_single_image():
    """One image: the per-channel statistics of its own pixels."""
    x = torch.tensor([[[[1.0, 3.0]], [[2.0, 6.0]]]])  # 1 image, 2 channels of 1×2 pixels
    s = Standardize().fit(x)
    assert torch.equal(s.mean, torch.tensor([2.0, 4.0])) and torch.equal(s.std, torch.tensor([1.0, 2.0]))


def test_gaussian_kernel_with_another_sigma():
    """exp(-(i² + j²) / (2σ²)), normalised: σ = 3 tells σ² from 2σ, which agree at the default σ = 2."""
    k = gaussian_kernel(5, sigma=3.0).numpy()
    offsets = np.arange(5) - 2
    g = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / 18.0)
    assert np.abs(k - g / g.sum()).max() < 1e-15


@pytest.mark.parametrize("step, who", [
    (ToUnitRange(), "ToUnitRange"), (MeanImage(), "MeanImage.fit"), (GCN(), "GCN"), (ZCA(), "ZCA.fit"),
    (LCN(), "LCN"), (Standardize(), "Standardize.fit"),
])
def test_a_batch_of_the_wrong_shape_is_refused_by_name(step, who):
    """The message names the step that refused the batch (fit for the fitted steps)."""
    call = step.fit if step.fitted_buffers else step
    with pytest.raises(ValueError, match=rf"^{who} expects a batch of shape \(N, C, H, W\), got shape \(3, 4\)$"):
        call(torch.zeros(3, 4))


@pytest.mark.parametrize("step, who", [(MeanImage(), "MeanImage"), (ZCA(), "ZCA"), (Standardize(), "Standardize")])
def test_a_fitted_step_refuses_a_wrong_batch_by_name(step, who):
    step.fit(torch.ones(2, 1, 2, 2))
    with pytest.raises(ValueError, match=rf"^{who} expects a batch of shape \(N, C, H, W\), got shape \(2, 2\)$"):
        step(torch.zeros(2, 2))


@pytest.mark.parametrize("name", ["unit", "mean_image", "gcn", "zca", "lcn", "standardize"])
def test_every_step_gives_float32_for_float64_input_and_keeps_float32_statistics(name):
    """The pipeline's contract: float32 out whatever comes in, and fitted statistics stored in float32 (what the
    checkpoint and the shipped weights hold)."""
    x = torch.from_numpy(np.random.default_rng(8).normal(100, 30, (40, 2, 3, 3)))  # float64
    step = build_pipeline([name]).steps[0].fit(x)
    assert step(x).dtype == torch.float32
    for buffer in step.fitted_buffers:
        assert getattr(step, buffer).dtype == torch.float32, buffer


def test_standardize_names_the_channel_counts_that_differ():
    s = Standardize().fit(torch.ones(2, 3, 4, 5))
    with pytest.raises(ValueError, match=r"^Standardize was fitted on 3 channels, this batch has 1$"):
        s(torch.ones(2, 1, 4, 5))
