"""The GPU training path on the CPU: CUDA-graphed steps (with a stand-in for the capture) and the fused optimizer.

A CPU cannot capture a graph, so ``make_graphed`` is replaced by a stand-in that does what
``torch.cuda.make_graphed_callables`` does to a module and its state: three warm-up passes in training mode
(BatchNorm statistics move, dropout draws), then a forward that replays one input shape only, copying each batch
into the sample it was captured with (its static input), and runs eagerly in eval mode. Training through it must
equal eager training exactly.
"""
from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

import nin.train.engine as engine
from nin.cli import main
from nin.models import create_model
from nin.train import Trainer, apply_overrides, load_recipe
from nin.train.graphs import graph_training_forward
from nin.train.optimizer import build_optimizer, build_schedule, set_rates


def stand_in_capture(replayed: list[tuple[int, ...]]):
    def make_graphed(module: torch.nn.Module, sample_args: tuple[torch.Tensor, ...]) -> torch.nn.Module:
        assert not torch.is_autocast_enabled("cpu") or not torch.is_autocast_cache_enabled(), \
            "a capture under autocast needs cache_enabled=False"
        params = list(module.parameters())
        for _ in range(3):
            torch.autograd.grad(module(*sample_args).float().sum(), params)
        original, graphed_mode, static = module.forward, module.training, sample_args[0]

        def forward(x: torch.Tensor) -> torch.Tensor:
            if module.training != graphed_mode:
                return original(x)
            if x.shape != static.shape:
                raise RuntimeError(f"a graph captured for {tuple(static.shape)} was replayed with {tuple(x.shape)}")
            replayed.append(tuple(x.shape))
            if x.data_ptr() != static.data_ptr():
                static.copy_(x)
            return original(static)

        module.forward = forward
        return module
    return make_graphed


GRAPHS_TINY = ["subset=200", "batch_size=64", "epochs=2", "test_splits=[]", "eval_split=none", "device=\"cpu\"",
               "model_args.batch_norm=true", "model_args.packed_dropout=true"]


@pytest.mark.parametrize("numerics", [["precision=\"bf16\"", "channels_last=true"], ["precision=\"fp32\""]])
def test_graphed_training_equals_eager_training(numerics: list[str], shared_data: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Full batches go through the graph, the last 8 images of each epoch run eagerly, the graph's input buffer is
    not the training data, and the capture's warm-up leaves neither BatchNorm's statistics nor the random state
    changed."""
    eager = Trainer(apply_overrides(load_recipe("mnist"), [*GRAPHS_TINY, *numerics]), tmp_path / "eager",
                    data_root=shared_data, progress=False)
    eager.fit()

    replayed: list[tuple[int, ...]] = []
    monkeypatch.setattr(engine, "check_graphs_possible", lambda *args: None)
    monkeypatch.setattr(engine, "graph_training_forward",
                        functools.partial(graph_training_forward, make_graphed=stand_in_capture(replayed)))
    graphed = Trainer(apply_overrides(load_recipe("mnist"), [*GRAPHS_TINY, *numerics, "cuda_graphs=true"]),
                      tmp_path / "graphed", data_root=shared_data, progress=False)
    graphed.fit()

    assert replayed == [(64, 1, 28, 28)] * 6  # 3 full batches in each of 2 epochs; 200 = 3 x 64 + 8
    assert [{k: v for k, v in row.items() if k not in ("images_per_s", "elapsed_s")} for row in graphed.history] == \
        [{k: v for k, v in row.items() if k not in ("images_per_s", "elapsed_s")} for row in eager.history]
    for (name, a), b in zip(eager.model.state_dict().items(), graphed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_the_capture_keeps_batchnorm_statistics_and_random_state_and_replays_one_shape_in_training() -> None:
    torch.manual_seed(0)
    model = create_model("nin_mnist", batch_norm=True)
    sample = torch.randn(16, 1, 28, 28)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    replayed: list[tuple[int, ...]] = []
    graph_training_forward(model, sample, "fp32", make_graphed=stand_in_capture(replayed))
    assert torch.equal(torch.get_rng_state(), rng)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    model.eval()  # evaluation runs eagerly, at any batch size
    model(torch.randn(5, 1, 28, 28))
    model.train()
    model(torch.randn(3, 1, 28, 28))
    model(sample)
    assert replayed == [(16, 1, 28, 28)]


def test_graphs_on_a_cpu_are_refused_before_any_work(shared_data: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert main(["train", "--recipe", "mnist", "--device", "cpu", "--set", "cuda_graphs=true", "--out", str(out),
                 "--data-dir", str(shared_data)]) == 2
    err = capsys.readouterr().err
    assert "cuda_graphs = true needs a CUDA GPU" in err and "--set cuda_graphs=false" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_the_fused_update_of_the_gpu_equals_the_default_one() -> None:
    """The GPU trains with fused SGD: per group, the same update as the CPU's default, with the authors' per-layer
    rates (biases 2x, cccp6 0.1x and 0.2x) and weight decay, after the schedule has set the rates."""
    recipe = load_recipe("mnist")
    torch.manual_seed(0)
    reference = create_model("nin_mnist", **recipe.model_args)
    fused = create_model("nin_mnist", **recipe.model_args)
    fused.load_state_dict(reference.state_dict())
    optimizers = [build_optimizer(reference, recipe), build_optimizer(fused, recipe)]
    for group in optimizers[1].param_groups:
        group["fused"] = True  # what build_optimizer chooses for parameters on a GPU
    schedule = build_schedule(recipe, steps_per_epoch=10)
    for step in range(3):
        grads = [torch.randn_like(p) for p in reference.parameters()]
        for model, optimizer in zip((reference, fused), optimizers):
            set_rates(optimizer, schedule, recipe, epoch=0, step=step)
            for p, g in zip(model.parameters(), grads):
                p.grad = g.clone()
            optimizer.step()
    for (name, a), b in zip(reference.named_parameters(), fused.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7, msg=name)


def test_bench_refuses_graphs_on_a_cpu_in_one_line(capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", "--device", "cpu", "--cuda-graphs", "--steps", "1", "--repeats", "1"]) == 2
    err = capsys.readouterr().err
    assert err == ("nin bench: error: --cuda-graphs needs a CUDA GPU; use --device cuda on a machine with one, or "
                   "leave --cuda-graphs out\n")
