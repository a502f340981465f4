"""`nin bench`: the report on tiny random data, and that ours and the reference compute the same step."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from nin.bench import runner as bench
from nin.bench.reference import PAD, ReferenceTransform, crop_flip
from nin.bench.runner import MODEL, PHASES, SIDES, BenchConfig, OursTrainer, build_runner, fit_preprocess, load_images
from nin.data import Augment
from nin.models import create_model

TINY = BenchConfig(steps=1, repeats=2, batch_size=4, eval_batch_size=8, images=8, device="cpu", matmul_size=64)
CPU = torch.device("cpu")


def _positive(x: float) -> bool:
    return math.isfinite(x) and x > 0


def test_the_report_has_every_number_and_they_are_positive(monkeypatch: pytest.MonkeyPatch) -> None:
    # the memory runs in this process: a fresh interpreter per run is tested once, below
    monkeypatch.setattr(bench, "run_side_in_fresh_process",
                        lambda config, side, phase, images, labels, preprocess:
                        bench.run_side(config, side, phase, images.numpy(), labels.numpy(), preprocess))
    report = bench.run_benchmark(TINY)
    for key in ("command", "date", "hardware", "threads", "config", "data", "model", "peak"):
        assert key in report, key
    assert report["model"]["train_flop_per_image"] == 6 * report["model"]["multiply_adds_per_image"]
    assert 222e6 < report["model"]["multiply_adds_per_image"] < 223e6
    assert _positive(report["peak"]["fp32_gflops"]) and _positive(report["peak"]["bf16_gflops"])
    for phase in PHASES:
        result = report[phase]
        assert _positive(result["ratio"]) and result["met"] == (result["ratio"] >= result["target"])
        for side in SIDES:
            assert len(result[side]["images_per_s"]) == TINY.repeats
            for key in ("median_images_per_s", "gflops", "fraction_of_fp32_peak", "fraction_of_bf16_peak"):
                assert _positive(result[side][key]), (phase, side, key)
        memory = report["memory"][phase]
        assert memory["measure"] == "peak_rss_mib" and _positive(memory["ratio"])
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
    ours = OursTrainer(create_model(MODEL), images, labels, preprocess, len(images), TINY, CPU, precision="fp32")
    ours.model.load_state_dict(reference.model.state_dict())
    reference.model.eval()  # dropout off: its masks are random, the rest of the step is not
    ours.model.eval()
    x, y = ours.preprocess(images[:4]), labels[:4]

    loss_ref = reference.step(x, y)
    loss_sum, logits = ours.step(x.contiguous(memory_format=torch.channels_last), y)
    torch.testing.assert_close(loss_sum / len(y), loss_ref, rtol=1e-5, atol=1e-6)
    assert logits.dtype == torch.float32 and logits.shape == (4, 10)
    ref_params = dict(reference.model.named_parameters())
    for name, p in ours.model.named_parameters():
        q = ref_params[name]
        scale = q.grad.abs().max().item() or 1.0
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5 * scale, msg=name)
        if p.ndim > 1:  # weights: lr multiplier 1 and weight decay on both sides, so the same update
            torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-7)


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
