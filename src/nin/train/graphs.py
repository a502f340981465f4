"""CUDA graphs for training: the forward and backward of every full-size batch replayed as one graph.

At the paper's batch of 128, NIN's small layers leave a large GPU waiting for the host to launch their kernels:
on an H200 the eager step ran at 4% of the card's bf16 peak (``results/bench/h200.json``). A graph launches the
whole forward and backward at once. The optimizer step stays outside it (fused SGD, a few kernels), so the rates
the schedule sets at every step take effect without a new capture, and a batch of another size (an epoch's
last, smaller one) runs eagerly through the same parameters.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from nin.inference.evaluate import autocast
from nin.train.health import TrainingError
from nin.train.recipe import Recipe
from nin.utils.distributed import World

GraphFunction = Callable[[nn.Module, tuple[torch.Tensor, ...]], nn.Module]


def graph_training_forward(model: nn.Module, sample: torch.Tensor, precision: str,
                           make_graphed: GraphFunction | None = None) -> None:
    """Make ``model``'s training-mode forward on batches shaped like ``sample`` a CUDA graph replay (in place).

    ``sample`` is a batch as the loader yields it (dtype, shape and memory format), not a view of the data: the
    graph keeps it as its input buffer and copies every batch into it (``DeviceLoader.capture_batch``); its
    values only warm the graph up. The capture's warm-up passes update BatchNorm's running statistics and draw
    dropout masks, so the statistics and the random state are put back: the run's statistics and draws are those
    of its own batches.
    ``make_graphed`` is ``torch.cuda.make_graphed_callables``; tests pass a stand-in, since a CPU cannot capture.
    """
    make_graphed = make_graphed or torch.cuda.make_graphed_callables
    eager_forward = model.forward
    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    cuda = sample.device.type == "cuda"
    rng = torch.get_rng_state(), torch.cuda.get_rng_state(sample.device) if cuda else None
    model.train()
    # autocast's weight cache would keep the capture's casts: the graph must cast the current weights each replay
    with autocast(sample.device, precision, cache_enabled=False):
        make_graphed(model, (sample,))
    graphed_forward = model.forward  # make_graphed_callables replaced it (it runs eagerly in eval mode)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            buffer.copy_(buffers[name])
    torch.set_rng_state(rng[0])  # the warm-up's dropout draws are not the run's: a resume must draw the same
    if cuda:
        torch.cuda.set_rng_state(rng[1], sample.device)
    shape = sample.shape

    def forward(x: torch.Tensor) -> torch.Tensor:
        return graphed_forward(x) if x.shape == shape and model.training else eager_forward(x)

    model.forward = forward  # type: ignore[method-assign]


def check_graphs_possible(recipe: Recipe, device: torch.device, world: World) -> None:
    """Refuse ``cuda_graphs`` where no graph can be captured, before any data is loaded."""
    if not recipe.cuda_graphs:
        return
    if device.type != "cuda":
        raise TrainingError("cuda_graphs = true needs a CUDA GPU (a graph is captured on the device); "
                            "train on a GPU (--device cuda) or set cuda_graphs = false (--set cuda_graphs=false)")
    if world.distributed:
        raise TrainingError("cuda_graphs = true does not work under torchrun (DistributedDataParallel's gradient "
                            "hooks cannot be captured); run one process per GPU or set cuda_graphs = false")
