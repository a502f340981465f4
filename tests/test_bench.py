"""`nin bench`: the report on tiny random data, and that ours and the reference compute the same step."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from nin.bench import runner as bench
from nin.bench.reference import PAD, ReferenceTransform, crop_flip
from nin.bench.runner import PHASES, SIDES, BenchConfig, build_runner, fit_preprocess, load_images
from nin.data import Augment

TINY = BenchConfig(steps=1, repeats=2, batch_size=4, eval_batch_size=8, images=8, device="cpu", matmul_size=64)
CPU = torch.device("cpu")


def _positive(x: float) -> bool:
    return math.isfinite(x) and x > 0


# nin_cifar10's multiply-adds per 32×32 image, counted by hand (output pixels × out × in × kernel area):
# mlpconv1 at 32×32: 5×5 3→192, 1×1 192→160, 1×1 160→96; max pool to 16×16 (rounded up);
# mlpconv2 at 16×16: 5×5 96→192, 1×1 192→192 twice; pool to 8×8; mlpconv3 at 8×8: 3×3 192→192, 1×1 192→192, 192→10.
HAND_MACS = (1024 * (192 * 3 * 25 + 160 * 192 + 96 * 160) + 256 * (192 * 96 * 25 + 2 * 192 * 192)
             + 64 * (192 * 192 * 9 + 192 * 192 + 10 * 192))


def test_the_report_numbers_follow_from_the_measured_speeds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every derived number against its definition, from the raw measurements the report also holds: the model's
    work counted by hand, medians, GFLOP/s = images/s × FLOP per image (2 per multiply-add forward, 3 times that to
    train), fractions of the measured peaks, and ours/reference ratios against their targets. Catches a wrong FLOP
    count, a fraction of the wrong peak, a ratio the wrong way round or a target compared the wrong way."""
    # the memory runs in this process: a fresh interpreter per run is tested once, below
    monkeypatch.setattr(bench, "run_side_in_fresh_process",
                        lambda config, side, phase, images, labels, preprocess:
                        bench.run_side(config, side, phase, images.numpy(), labels.numpy(), preprocess))
    report = bench.run_benchmark(TINY)
    for key in ("command", "date", "hardware", "threads", "config", "data", "model", "peak"):
        assert key in report, key
    assert HAND_MACS == 222_486_528
    assert report["model"]["multiply_adds_per_image"] == HAND_MACS
    flop = {"train": 6 * HAND_MACS, "inference": 2 * HAND_MACS}
    assert report["model"]["train_flop_per_image"] == flop["train"]
    assert report["model"]["inference_flop_per_image"] == flop["inference"]
    peak = report["peak"]
    assert _positive(peak["fp32_gflops"]) and _positive(peak["bf16_gflops"])
    for phase in PHASES:
        result = report[phase]
        for side in SIDES:
            speeds = result[side]["images_per_s"]
            assert len(speeds) == TINY.repeats and all(_positive(v) for v in speeds)
            median = (speeds[0] + speeds[1]) / 2  # the median of TINY's 2 repeats
            gflops = median * flop[phase] / 1e9
            assert result[side]["median_images_per_s"] == pytest.approx(median, rel=1e-12), (phase, side)
            assert result[side]["gflops"] == pytest.approx(gflops, rel=1e-12), (phase, side)
            assert result[side]["fraction_of_fp32_peak"] == pytest.approx(gflops / peak["fp32_gflops"], rel=1e-12)
            assert result[side]["fraction_of_bf16_peak"] == pytest.approx(gflops / peak["bf16_gflops"], rel=1e-12)
        ratio = result["ours"]["median_images_per_s"] / result["reference"]["median_images_per_s"]
        assert result["ratio"] == pytest.approx(ratio, rel=1e-12) and result["met"] == (ratio >= result["target"])
        memory = report["memory"][phase]
        assert memory["measure"] == "peak_rss_mib"
        used = {side: memory[side]["peak_rss_mib"] for side in SIDES}
        assert all(_positive(v) for v in used.values())
        assert memory["ratio"] == pytest.approx(used["ours"] / used["reference"], rel=1e-12)
        assert memory["met"] == (memory["ratio"] <= 1.0)
        for side in SIDES:
            assert memory[side]["side"] == side and memory[side]["phase"] == phase
    assert "train images/s" in bench.format_report(report)


def test_int8_inference_runs_a_quantized_copy_of_ours() -> None:
    config = dataclasses.replace(TINY, inference_precision="int8")
    images, labels, _ = load_images(config)
    runner = build_runner("ours", images, labels, fit_preprocess(images), config, CPU)
    runner.train(1)
    assert runner.int8 is None  # training never holds the int8 copy
    runner.infer()
    assert any(".quantized" in type(m).__module__ for m in runner.int8.modules())
    assert "--inference-precision int8" in " ".join(config.to_args())
    assert "int8" in bench.format_report(bench.run_benchmark(dataclasses.replace(config, memory=False)))


def test_a_memory_run_in_a_fresh_process() -> None:
    images, labels, _ = load_images(TINY)
    result = bench.run_side_in_fresh_process(TINY, "ours", "inference", images, labels, fit_preprocess(images))
    assert result["side"] == "ours" and result["phase"] == "inference" and _positive(result["images_per_s"])
    assert result["peak_rss_mib"] >= result["startup_rss_mib"] > 0


def test_reference_and_ours_compute_the_same_fp32_training_step() -> None:
    images, labels, _ = load_images(TINY)
    preprocess = fit_preprocess(images)
    reference = build_runner("reference", images, labels, preprocess, TINY, CPU)
    ours = build_runner("ours", images, labels, preprocess, dataclasses.replace(TINY, precision="fp32"), CPU)
    ours.model.load_state_dict(reference.model.state_dict())
    reference.model.eval()  # dropout off: its masks are random, the rest of the step is not
    ours.model.eval()
    # Both in ours' layout: max pooling's gradient jumps at a tie, and NCHW and NHWC kernels round differently
    # (by CPU), so a near tie in the reference's layout sent one gradient elsewhere and failed this on a Zen 3.
    reference.model.to(memory_format=torch.channels_last)
    x = ours.preprocess(images[:4]).contiguous(memory_format=torch.channels_last)
    y = labels[:4]

    loss_ref = reference.step(x, y)
    loss_sum, logits = ours.step(x, y)
    torch.testing.assert_close(loss_sum / len(y), loss_ref, rtol=1e-5, atol=1e-6)
    assert logits.dtype == torch.float32 and logits.shape == (4, 10)
    ref_params = dict(reference.model.named_parameters())
    for name, p in ours.model.named_parameters():
        q = ref_params[name]
        scale = q.grad.abs().max().item() or 1.0
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5 * scale, msg=name)
        if p.ndim > 1:  # weights: lr multiplier 1 and weight decay on both sides, so the same update
            torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-7)


def test_ours_in_fp32_trains_and_infers_without_autocast() -> None:
    """For a CPU without bf16 instructions: ``--precision fp32`` trains ours in fp32 (the step above), and
    ``--inference-precision fp32`` infers in fp32 even from data kept in bf16 for bf16 training; the report then
    sets ours against the fp32 peak and measures no bf16 one. Catches autocast left on, bf16 data fed to fp32
    weights, the wrong peak, a bf16 peak measured for nothing."""
    images, labels, _ = load_images(TINY)
    config = dataclasses.replace(TINY, inference_precision="fp32")
    ours = build_runner("ours", images, labels, fit_preprocess(images), config, CPU)
    seen = []
    ours.model.features[0].register_forward_hook(lambda module, args, out: seen.append((args[0].dtype, out.dtype)))
    ours.infer()
    assert ours.loader.images.dtype == torch.bfloat16 and seen and set(seen) == {(torch.float32, torch.float32)}
    config = dataclasses.replace(TINY, precision="fp32", inference_precision="fp32", memory=False, layers=False)
    assert "--precision fp32 --inference-precision fp32" in " ".join(config.to_args())
    report = bench.run_benchmark(config)
    assert report["config"]["precision"] == "fp32"
    # no bf16 peak: minutes a product where bf16 is emulated, and nothing of ours is set against it
    assert "bf16_gflops" not in report["peak"] and "fraction_of_bf16_peak" not in report["train"]["ours"]
    text = bench.format_report(report)
    assert "bf16 not measured (ours runs in fp32)" in text
    for phase in PHASES:
        assert f"ours {100 * report[phase]['ours']['fraction_of_fp32_peak']:.0f}% of the fp32 peak" in text, phase


class _Stop(Exception):
    pass


@pytest.mark.parametrize(("precision", "inference_precision", "warned"),
                         [("bf16", "bf16", True), ("fp32", "bf16", True), ("bf16", "int8", True),
                          ("fp32", "fp32", False), ("fp32", "int8", False)])
def test_nin_bench_warns_where_bf16_is_emulated_unless_ours_runs_without_it(
        precision: str, inference_precision: str, warned: bool, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    """Before the long run, as ours would be timed in emulated bf16 (0.09× the port's training on a Zen 3)."""
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)

    def stop(images: torch.Tensor) -> None:
        raise _Stop

    monkeypatch.setattr(bench, "fit_preprocess", stop)  # the run's first step after its checks
    with pytest.raises(_Stop):
        bench.run_benchmark(dataclasses.replace(TINY, precision=precision, inference_precision=inference_precision))
    assert ("nin bench: warning: this CPU has no bf16 instructions" in capsys.readouterr().err) == warned


def test_reference_transforms_match_our_preprocessing_and_augmentation() -> None:
    images, labels, _ = load_images(TINY)
    preprocess = fit_preprocess(images)
    standardize = preprocess.steps[-1]
    plain = ReferenceTransform(standardize.mean, standardize.std, augment=False)
    hwc = images.permute(0, 2, 3, 1).numpy()
    torch.testing.assert_close(torch.stack([plain(img) for img in hwc]), preprocess(images))

    params = Augment(PAD, flip=True).sample(len(images), torch.Generator().manual_seed(1))
    batched = Augment(PAD, flip=True).apply(images.float(), params)  # zero padding = black, as the port's
    for i, img in enumerate(hwc):
        window = crop_flip(img, PAD - int(params.shift_y[i]), PAD - int(params.shift_x[i]), bool(params.flip[i]))
        assert np.array_equal(batched[i].permute(1, 2, 0).numpy(), window.astype(np.float32)), i
