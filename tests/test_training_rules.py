"""The training-control rules that decide the reported numbers, through the real Trainer, against values worked out
here: the paper's plateau rule (drops, stop, resume between drops), the rates the optimizer really applies to each
layer (per-layer multipliers, biases held at the drops), and the dead-class-map rules.

Every run uses the scripted test network of ``_scripted.py`` on a generated MNIST-format root, so the training error
of each epoch and which class maps are dead are known in advance, and a run takes well under a second per epoch.
The one exception, ``test_cifar10_recipe_rates...``, trains the real ``nin_cifar10`` for three steps.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from _idx import write_mnist
from _scripted import scripted_recipe, tiny_root
from torch import nn

from nin.checkpoint import load_checkpoint, save_checkpoint

# the code under test: keep these imports together, so they are easy to re-point when modules move
from nin.models import create_model, param_groups
from nin.train import Trainer, TrainingError, apply_overrides, load_recipe
from nin.train.health import HealthMonitor
from nin.train.metrics import read_metrics
from nin.train.optimizer import build_optimizer
from nin.train.recipe import RecipeError, recipe_from_dict

LR = 0.1


# ------------------------------------------------------------------------------------------------ helpers

class RateProbe:
    """The learning rate SGD really applied to each parameter at each step, read off the update itself.

    With momentum 0 and weight decay 0 an SGD step is ``p -= rate * grad``, so ``rate = (before - after) / grad``
    on every element with a gradient. The probe hooks the optimizer (``register_step_pre_hook`` / ``_post_hook``),
    so it sees what the Trainer really did, whatever ``param_groups`` say.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.names = {p: name for name, p in model.named_parameters()}
        self.steps: list[dict[str, float]] = []
        self._before: dict[nn.Parameter, tuple[torch.Tensor, torch.Tensor]] = {}
        optimizer.register_step_pre_hook(self._pre)
        optimizer.register_step_post_hook(self._post)

    def _pre(self, optimizer, args, kwargs) -> None:
        self._before = {p: (p.detach().clone(), p.grad.detach().clone())
                        for group in optimizer.param_groups for p in group["params"] if p.grad is not None}

    def _post(self, optimizer, args, kwargs) -> None:
        rates = {}
        for p, (before, grad) in self._before.items():
            step, grad = (before - p.detach()).double(), grad.double()
            assert grad.norm() > 0, self.names[p]
            rate = (step * grad).sum().item() / (grad * grad).sum().item()  # least squares: step = rate * grad
            # one rate for the whole tensor, up to float32 rounding: anything else is not a plain SGD step
            assert (step - rate * grad).norm() <= 1e-3 * (rate * grad).norm(), self.names[p]
            rates[self.names[p]] = rate
        self.steps.append(rates)


def paper_rule(errors: list[float], patience: int, min_delta: float, max_drops: int) -> tuple[list[int], int]:
    """The paper's rule (Section 4.1), written out here: (1-based epochs after which the rate is divided, last epoch).

    An epoch improves when its error beats the best since the last drop by more than ``min_delta``; after
    ``patience`` epochs in a row without improvement the rate is divided, or training stops once it has been
    divided ``max_drops`` times.
    """
    drops: list[int] = []
    best, waited = math.inf, 0
    for epoch, error in enumerate(errors, start=1):
        if error < best - min_delta:
            best, waited = error, 0
            continue
        waited += 1
        if waited == patience:
            if len(drops) == max_drops:
                return drops, epoch
            drops.append(epoch)
            best, waited = math.inf, 0
    return drops, len(errors)


def _timeless(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in ("images_per_s", "elapsed_s")} for row in rows]


# ------------------------------------------------------------------------------------ the paper's plateau rule

N_PLATEAU, BATCH_PLATEAU = 20, 8  # 3 steps per epoch (8, 8, 4 images)
PATIENCE, MIN_DELTA = 2, 7.5  # errors move in steps of 5 points: a 5-point gain is no improvement, 10 is
# images wrong per epoch (of 20): errors 50, 45, 40, 35, 35 | 35, 30, 25, 20, 25 | 20, 20, 20 (%)
WRONG = [10, 9, 8, 7, 7, 7, 6, 5, 4, 5, 4, 4, 4]
ERRORS = [100.0 * w / N_PLATEAU for w in WRONG]
# Worked out by hand. Epoch 3 (40 < 50 - 7.5) is a new best, so the count starts again; epochs 4 and 5 do
# not beat 40 - 7.5: divide after epoch 5. After a drop the best starts afresh, so epoch 6 (35, no better
# than before the drop) is the new rate's first best; 7 waits, 8 (25 < 35 - 7.5) is a best; 9 and 10 wait:
# divide after epoch 10. Epoch 11 is a best, 12 and 13 wait: two drops done, so training stops after 13.
DROPS, LAST_EPOCH = [5, 10], 13
EXPECTED_LR = [LR] * 5 + [LR / 10] * 5 + [LR / 100] * 3


@pytest.fixture(scope="module")
def plateau_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    return tiny_root(tmp_path_factory.mktemp("plateau-data"), N_PLATEAU)


def plateau_recipe(labels: list[int]):
    return recipe_from_dict(scripted_recipe(
        labels, steps_per_epoch=3, batch_size=BATCH_PLATEAU, wrong=WRONG, weight_lr_mult=0.1, bias_lr_mult=0.2,
        noise=True, epochs=40, lr=LR, schedule="paper", plateau_patience=PATIENCE, plateau_min_delta=MIN_DELTA,
        plateau_max_drops=2, hold_bias_rates=True), "test")


def test_the_reference_rule_gives_the_hand_worked_drops() -> None:
    """Guards the reference itself: it must agree with the drops worked out by hand above."""
    assert paper_rule(ERRORS, PATIENCE, MIN_DELTA, 2) == (DROPS, LAST_EPOCH)
    # a rule that kept its best error across a drop would divide after epoch 7, not 10
    assert paper_rule(ERRORS, PATIENCE, MIN_DELTA, 2) != ([5, 7], 10)


def test_paper_rule_drops_twice_then_stops_through_the_trainer(plateau_root, tmp_path: Path) -> None:
    """Catches a plateau rule that keeps its best error after a drop, counts `>` patience, resets nothing on a
    new best, never stops, or a Trainer that reports or applies other rates than the schedule's."""
    root, labels = plateau_root
    trainer = Trainer(plateau_recipe(labels), tmp_path, data_root=root, progress=False)
    probe = RateProbe(trainer.model, trainer.optimizer)
    summary = trainer.fit()

    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == list(range(1, LAST_EPOCH + 1))
    assert [r["train_error"] for r in rows] == pytest.approx(ERRORS)
    assert paper_rule([r["train_error"] for r in rows], PATIENCE, MIN_DELTA, 2) == (DROPS, LAST_EPOCH)
    assert [r["lr"] for r in rows] == pytest.approx(EXPECTED_LR, rel=1e-12)
    assert summary["lr_drops_after_epochs"] == DROPS and summary["epochs_run"] == LAST_EPOCH
    assert summary["stopped_early"] is None  # the paper's stop is the schedule's end, not an early stop
    # what `nin eval` / `predict` rebuild the network from
    state = load_checkpoint(tmp_path / "last.pt")
    assert (state["epoch"], state["model_name"], state["dataset"]) == (LAST_EPOCH, "scripted_test_net", "mnist")
    assert state["model_args"] == trainer.recipe.model_args and state["input_size"] == [1, 2, 2]
    assert state["classes"] == [str(d) for d in range(10)]

    # the rates SGD applied: the weights' (0.1x) divided at each drop, the bias's (0.2x) held (hold_bias_rates)
    assert len(probe.steps) == 3 * LAST_EPOCH
    for step, rates in enumerate(probe.steps):
        epoch_lr = EXPECTED_LR[step // 3]
        assert rates["weight"] == pytest.approx(0.1 * epoch_lr, rel=2e-3), step
        assert rates["bias"] == pytest.approx(0.2 * LR, rel=2e-3), step


def test_resume_between_drops_follows_the_same_rule(plateau_root, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    """Catches a schedule whose state (best error, epochs without improvement, drops) is not saved or restored:
    cut after epoch 5 (just divided) and after epoch 9 (one epoch into a wait), the resumed run must still divide
    after epoch 10. The records must
    equal the uninterrupted run's, losses included, so the random generator must be restored too."""
    root, labels = plateau_root
    # first cut right after the first drop (epoch 5), then one epoch into the wait after epoch 8
    assert Trainer(plateau_recipe(labels), tmp_path, data_root=root, progress=False,
                   stop_after=5).fit()["lr_drops_after_epochs"] == [5]
    cut = Trainer(plateau_recipe(labels), tmp_path, data_root=root, resume=True, progress=False, stop_after=9)
    assert cut.fit()["epochs_run"] == 9
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 9
    capsys.readouterr()
    resumed = Trainer(plateau_recipe(labels), tmp_path, data_root=root, resume=True, progress=False)
    assert f"resumed from {tmp_path / 'last.pt'} after epoch 9\n" in capsys.readouterr().err
    probe = RateProbe(resumed.model, resumed.optimizer)
    summary = resumed.fit()
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["lr"] for r in rows] == pytest.approx(EXPECTED_LR, rel=1e-12)
    assert summary["lr_drops_after_epochs"] == DROPS and summary["epochs_run"] == LAST_EPOCH
    assert [r["lr_drops"] for r in rows][-1] == [d - 1 for d in DROPS]  # the rows keep 0-based epochs
    assert len(probe.steps) == 3 * (LAST_EPOCH - 9)
    assert probe.steps[0]["weight"] == pytest.approx(0.1 * LR / 10, rel=2e-3)  # epoch 10: before the 2nd drop
    assert probe.steps[-1]["weight"] == pytest.approx(0.1 * LR / 100, rel=2e-3)

    whole = Trainer(plateau_recipe(labels), tmp_path / "whole", data_root=root, progress=False)
    whole.fit()
    assert _timeless(read_metrics(tmp_path / "whole" / "metrics.jsonl")) == _timeless(rows)

    # the rule said stop: resuming that run (its recipe allows 40 epochs) trains no further epoch
    again = Trainer(plateau_recipe(labels), tmp_path, data_root=root, resume=True, progress=False)
    assert again.fit()["epochs_run"] == LAST_EPOCH
    assert len(read_metrics(tmp_path / "metrics.jsonl")) == LAST_EPOCH


def test_a_checkpoint_from_before_the_rate_multipliers_resumes_with_them(plateau_root, tmp_path: Path) -> None:
    """A checkpoint written before the optimizer's groups held ``lr_mult`` and ``bias``: the resumed run takes
    them from the recipe's model and applies the multiplied rates. Catches a resume that drops the new keys."""
    root, labels = plateau_root
    Trainer(plateau_recipe(labels), tmp_path, data_root=root, progress=False, stop_after=2).fit()
    state = load_checkpoint(tmp_path / "last.pt")
    for group in state["optimizer"]["param_groups"]:
        del group["lr_mult"], group["bias"]
    save_checkpoint(tmp_path / "last.pt", {k: v for k, v in state.items() if k != "format"})
    resumed = Trainer(plateau_recipe(labels), tmp_path, data_root=root, resume=True, progress=False, stop_after=3)
    probe = RateProbe(resumed.model, resumed.optimizer)
    resumed.fit()
    assert len(probe.steps) == 3  # epoch 3, before the first drop
    for rates in probe.steps:
        assert rates["weight"] == pytest.approx(0.1 * LR, rel=2e-3) and rates["bias"] == pytest.approx(0.2 * LR,
                                                                                                      rel=2e-3)


# -------------------------------------------------------------- per-layer rates of the authors' CIFAR-10 recipe

@pytest.mark.parametrize("recipe_name, base_lr", [("cifar10", LR), ("cifar10-fc", LR / 2),
                                                   ("cifar10-fc-dropout", LR / 2)])
def test_cifar10_recipe_rates_per_layer_and_held_bias_rates_at_the_drops(shared_data: Path, tmp_path: Path,
                                                                        recipe_name: str, base_lr: float) -> None:
    """The authors' cuda-convnet rates (NIN/cifar-10_params): every weight at epsW, every bias at epsB = 2 epsW,
    cccp6 (the last 1x1 layer) at 0.1x and 0.2x; the README's drops divide epsW only. Table 5's fully connected
    layer (no authors' file) is one more layer at epsW and epsB, and cccp6 keeps its rates under it; those arms run
    at half the authors' base rate, which trains where theirs collapsed or killed the maps (docs/differences.md).

    Measured from the real parameter updates (one image per step) with momentum and weight decay 0, at a 'step'
    schedule with drops after epochs 1 and 2: catches a Trainer that ignores ``lr_mult`` (every layer at 1x),
    ignores ``hold_bias_rates`` (biases divided too), or gives the multipliers to the wrong layer (the head).
    """
    recipe = load_recipe(recipe_name)
    assert recipe.model_args == {"bias_lr_mult": 2.0, "last_layer_lr_mult": 0.1, "last_layer_bias_lr_mult": 0.2}
    assert recipe.hold_bias_rates and recipe.schedule == "step" and recipe.lr == base_lr
    recipe = apply_overrides(recipe, [
        "subset=1", "batch_size=1", "epochs=3", "milestones=[1, 2]", "momentum=0.0", "weight_decay=0.0",
        "preprocess=[\"gcn\"]", "eval_split=none", "test_splits=[]", "device=\"cpu\"", "save_every=100"])
    trainer = Trainer(recipe, tmp_path, data_root=shared_data, progress=False)
    # cccp6, found here without the model's own lr_multipliers(): the only convolution with 10 output maps
    convs = {name: m for name, m in trainer.model.named_modules() if isinstance(m, nn.Conv2d)}
    cccp6 = [name for name, m in convs.items() if m.out_channels == 10]
    assert len(convs) == 9 and cccp6 == [list(convs)[-1]]
    linears = [name for name, m in trainer.model.named_modules() if isinstance(m, nn.Linear)]
    assert len(linears) == (1 if recipe_name.startswith("cifar10-fc") else 0)
    expected_mult = {}
    for layer in [*convs, *linears]:
        last = layer == cccp6[0]
        expected_mult[f"{layer}.weight"] = 0.1 if last else 1.0
        expected_mult[f"{layer}.bias"] = 0.2 if last else 2.0
    # measured in float64, so that the tiny late updates are not lost to float32 rounding (same parameters, so
    # the optimizer's groups still hold them)
    trainer.model.double().register_forward_pre_hook(lambda module, args: (args[0].double(),))
    probe = RateProbe(trainer.model, trainer.optimizer)
    trainer.fit()

    assert len(probe.steps) == 3  # 3 epochs of 1 step (1 image)
    for epoch, rates in enumerate(probe.steps):
        assert set(rates) == set(expected_mult)
        for param, mult in expected_mult.items():
            factor = 1.0 if param.endswith("bias") else 0.1 ** epoch
            assert rates[param] == pytest.approx(base_lr * mult * factor, rel=1e-6), (epoch, param)


AUTHORS = {"bias_lr_mult": 2.0, "last_layer_lr_mult": 0.1, "last_layer_bias_lr_mult": 0.2}


@pytest.mark.parametrize("name, kwargs, last_weight, last_bias, other_bias", [
    ("nin_cifar10_fc", AUTHORS, 0.1, 0.2, 2.0),
    ("nin_cifar10", AUTHORS, 0.1, 0.2, 2.0),
    ("nin_cifar10", {"last_layer_lr_mult": 0.1}, 0.1, 0.2, 2.0),  # the last bias's default: bias x last layer
    ("nin_mnist", {}, 1.0, 1.0, 1.0),  # no multipliers unless asked for
    ("nin_cifar10_caffe", {}, 0.1, 0.1, 2.0),  # the Caffe zoo's: its last bias at 0.1x, not 2 x 0.1
])
def test_parameter_groups_of_the_authors_rates(name: str, kwargs: dict, last_weight: float, last_bias: float,
                                               other_bias: float) -> None:
    """The optimizer's groups, checked per parameter: rate = lr x multiplier, weight decay on weights only, ``bias``
    set on the undecayed groups. cccp6 (the last convolution) takes the authors' last-layer rates also under a fully
    connected head (Table 5's ablation), which is one more layer at the base rates. Catches multipliers given to the
    wrong layer (the head) or with wrong defaults, decay on biases, or groups that merge different multipliers."""
    model = create_model(name, **kwargs)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    last = [m for m in layers if isinstance(m, nn.Conv2d)][-1]
    assert last.out_channels == 10 and isinstance(layers[-1], nn.Linear if name.endswith("_fc") else nn.Conv2d)
    groups = param_groups(model, 0.5, 1e-4)
    group_of = {id(p): g for g in groups for p in g["params"]}
    assert len(group_of) == sum(1 for _ in model.parameters())
    for layer in layers:
        for kind, p in (("weight", layer.weight), ("bias", layer.bias)):
            if layer is last:
                mult = last_weight if kind == "weight" else last_bias
            else:
                mult = 1.0 if kind == "weight" else other_bias
            g = group_of[id(p)]
            assert (g["lr"], g["lr_mult"], g["bias"]) == (pytest.approx(0.5 * mult), pytest.approx(mult),
                                                          kind == "bias")
            assert g["weight_decay"] == (1e-4 if kind == "weight" else 0.0)
    assert len(groups) == len({(g["lr_mult"], g["bias"]) for g in groups})


@pytest.mark.parametrize("name", ["nin_cifar10_fc", "nin_cifar10_fc_dropout"])
def test_the_fully_connected_arms_as_they_ran_before_cccp6_kept_its_rates(name: str) -> None:
    """``head_takes_last_layer_rates`` (how the records before 2026-12-04 19:39 UTC ran): the fully connected layer
    at 0.1x and 0.2x and cccp6 at the base rates, 1x and 2x. Catches a flag that is ignored or moves more than the
    last layer's rates."""
    old = create_model(name, **AUTHORS, head_takes_last_layer_rates=True).lr_multipliers()
    now = create_model(name, **AUTHORS).lr_multipliers()
    cccp6 = [param for param in now if param.startswith("features.")][-2:]  # its weight and bias: the last ones
    assert [now[param] for param in cccp6] == [0.1, 0.2] and [old[param] for param in cccp6] == [1.0, 2.0]
    assert (now["head.fc.weight"], now["head.fc.bias"]) == (1.0, 2.0)
    assert (old["head.fc.weight"], old["head.fc.bias"]) == (0.1, 0.2)
    assert {param: m for param, m in old.items() if param not in cccp6 and not param.startswith("head.")} == {
        param: m for param, m in now.items() if param not in cccp6 and not param.startswith("head.")}
    gap = create_model("nin_cifar10", **AUTHORS, head_takes_last_layer_rates=True)  # no head parameters: no change
    assert gap.lr_multipliers() == create_model("nin_cifar10", **AUTHORS).lr_multipliers()


@pytest.mark.parametrize("hold", [True, False])
def test_rates_within_an_epoch_follow_the_warmup_and_drops(plateau_root, tmp_path: Path, hold: bool) -> None:
    """'step' schedule, one warm-up epoch, a drop at epoch 3 (of 3 steps each): the rate rises 1/3, 2/3, 1 over the
    first epoch's steps, then the weights' rate is divided by 10, the biases' too unless ``hold_bias_rates``.
    Measured from the updates. Catches a step index lost on the way to the schedule, or biases held (or not)
    against the recipe."""
    root, labels = plateau_root
    recipe = recipe_from_dict(scripted_recipe(
        labels, steps_per_epoch=3, batch_size=BATCH_PLATEAU, weight_lr_mult=0.1, bias_lr_mult=0.2, epochs=3,
        lr=LR, schedule="step", milestones=[2], warmup_epochs=1, hold_bias_rates=hold), "test")
    trainer = Trainer(recipe, tmp_path, data_root=root, progress=False)
    probe = RateProbe(trainer.model, trainer.optimizer)
    trainer.fit()
    warm = [1 / 3, 2 / 3, 1.0] + [1.0] * 6
    drop = [1.0] * 6 + [0.1] * 3
    assert len(probe.steps) == 9
    for step, rates in enumerate(probe.steps):
        assert rates["weight"] == pytest.approx(0.1 * LR * warm[step] * drop[step], rel=2e-3), step
        assert rates["bias"] == pytest.approx(0.2 * LR * warm[step] * (1.0 if hold else drop[step]), rel=2e-3), step


def test_each_step_follows_the_mean_gradient_of_its_own_batch(plateau_root, tmp_path: Path) -> None:
    """20 images in batches of 8, 8 and 4, label smoothing 0.1: the gradient of every step, the last and smaller
    batch included, is the mean over that batch of softmax(logits) - smoothed one-hot, computed here from the
    logits the network returned; the recorded loss and error are those of the epoch's 20 images. Catches a loss
    scaled by the full batch size in a short last batch, by the batch size instead of its inverse, label smoothing
    dropped on the way to the step, or an epoch total that keeps only some batches."""
    root, labels = plateau_root
    recipe = recipe_from_dict(scripted_recipe(labels, steps_per_epoch=3, batch_size=BATCH_PLATEAU, wrong=WRONG,
                                              epochs=2, lr=LR, label_smoothing=0.1), "test")
    trainer = Trainer(recipe, tmp_path, data_root=root, progress=False)
    seen, grads = [], []
    trainer.model.register_forward_hook(lambda module, args, out: seen.append((args[0].detach(), out.detach())))
    trainer.optimizer.register_step_pre_hook(lambda opt, args, kwargs: grads.append(trainer.model.bias.grad.clone()))
    trainer.fit()
    assert [len(x) for x, _ in seen] == [8, 8, 4] * 2 and len(grads) == 6
    losses, wrong = [0.0, 0.0], [0, 0]
    for step, ((x, logits), grad) in enumerate(zip(seen, grads)):
        index = (x[:, 0, 0, 0].double() * 255).round().long()
        y = torch.tensor(labels)[index]
        target = 0.9 * torch.nn.functional.one_hot(y, 10).double() + 0.1 / 10
        expected = (torch.softmax(logits.double(), dim=1) - target).mean(0)
        torch.testing.assert_close(grad.double(), expected, rtol=1e-5, atol=1e-7)
        losses[step // 3] += -(target * torch.log_softmax(logits.double(), dim=1)).sum().item()
        wrong[step // 3] += int((logits.argmax(1) != y).sum())
    # and the epoch's recorded loss and error: per image over all three batches
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["train_loss"] for r in rows] == pytest.approx([total / 20 for total in losses], rel=1e-6)
    assert [r["train_error"] for r in rows] == pytest.approx([100 * w / 20 for w in wrong]) == [50.0, 45.0]


def test_the_recorded_training_loss_is_the_models_loss_on_its_batch(tmp_path: Path) -> None:
    """One step of the real ``nin_mnist`` (no dropout) on 8 images: the recorded loss and error are those of the
    initial network on the batch, computed here in float64 with label smoothing 0.1 from a copy taken before
    training. Catches a step run at another precision than the recipe's fp32 or without its label smoothing."""
    root = tmp_path / "data"
    arrays = write_mnist(root / "mnist", n_train=10_008, n_test=8, gz=False, size=28)
    recipe = apply_overrides(load_recipe("mnist"), [
        "subset=8", "batch_size=8", "epochs=1", "label_smoothing=0.1", "model_args.dropout=0.0", "eval_split=none",
        "test_splits=[]", "device=\"cpu\"", "precision=\"fp32\""])
    trainer = Trainer(recipe, tmp_path / "run", data_root=root, progress=False)
    initial = copy.deepcopy(trainer.model).double().eval()
    trainer.fit()
    x = torch.from_numpy(arrays["train"][0][:8]).double().reshape(8, 1, 28, 28) / 255
    y = torch.from_numpy(arrays["train"][1][:8]).long()
    with torch.no_grad():
        logits = initial(x)
    row = read_metrics(tmp_path / "run" / "metrics.jsonl")[0]
    expected = torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.1).item()
    assert row["train_loss"] == pytest.approx(expected, rel=1e-5)
    assert row["train_error"] == pytest.approx(100 * int((logits.argmax(1) != y).sum()) / 8)


def test_a_model_without_multipliers_gets_the_base_rate_everywhere() -> None:
    """A network that declares no ``lr_multipliers`` (any torch module): every parameter at 1x the base rate."""
    groups = param_groups(nn.Linear(3, 2), 0.5, 1e-4)
    assert [(g["lr"], g["lr_mult"], g["bias"], g["weight_decay"], len(g["params"])) for g in groups] == [
        (0.5, 1.0, True, 0.0, 1), (0.5, 1.0, False, 1e-4, 1)]


def test_the_head_weight_decay_reaches_the_fully_connected_weights_only() -> None:
    """``head_weight_decay`` (cuda-convnet's per-layer ``wc``: 1 on fc10 in layer-params-18pct.cfg) through the recipe
    and the optimizer the Trainer builds, read off one real SGD step with zero gradients, where each weight shrinks by
    ``1 - rate * its decay`` (cuda-convnet's ``wc * epsW`` per step). Catches a decay given to the wrong layer, to
    the biases, ignored, or replacing the other layers' decay."""
    recipe = apply_overrides(load_recipe("cnn-fc"), ["head_weight_decay=1.0", "momentum=0.0"])
    assert (recipe.lr, recipe.weight_decay) == (0.001, 0.004)
    model = create_model(recipe.model, **recipe.model_args).double()
    optimizer = build_optimizer(model, recipe)
    with torch.no_grad():  # the biases start at 0, where no decay would show
        for p in model.parameters():
            p.add_(1.0)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    fc = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert len(fc) == 1
    for name, p in model.named_parameters():
        decay = 0.0 if name.endswith("bias") else 1.0 if name == f"{fc[0]}.weight" else 0.004
        assert torch.allclose(p.detach(), before[name] * (1 - 0.001 * decay), rtol=0, atol=1e-15), name


def test_a_head_weight_decay_without_head_weights_is_refused() -> None:
    """Under global average pooling there is no fully connected layer to decay: said at once, by option name."""
    with pytest.raises(RecipeError, match="head_weight_decay = 1.0 needs a fully connected head, and cnn_cifar10_gap "
                                          "has none"):
        apply_overrides(load_recipe("cnn-gap"), ["head_weight_decay=1.0"])
    with pytest.raises(ValueError, match="head has no weights to decay"):
        param_groups(create_model("nin_cifar10"), 0.1, 1e-4, head_weight_decay=1.0)


# --------------------------------------------------------------------------------------- dead class maps

N_DEAD, BATCH_DEAD = 10, 5  # 2 steps per epoch


@pytest.fixture(scope="module")
def dead_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    return tiny_root(tmp_path_factory.mktemp("dead-data"), 45)


def dead_class_stop(dead: list[list[int]], limit: int = 3) -> tuple[int | None, list[int]]:
    """(1-based epoch at which some class has been dead ``limit`` epochs in a row, those classes), by hand."""
    run = [0] * 10
    for epoch, classes in enumerate(dead, start=1):
        run = [n + 1 if c in classes else 0 for c, n in enumerate(run)]
        if max(run) >= limit:
            return epoch, [c for c, n in enumerate(run) if n >= limit]
    return None, []


def test_only_consecutive_dead_epochs_stop_training(dead_root, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    """Class 3 is dead in epochs 2, 3, 5, 6, 7 (alive in 4), class 7 in 6 and 7: training must stop after epoch 7,
    naming class 3 only. Catches a detector that counts dead epochs that are not consecutive (it would stop
    after epoch 5) or that names classes dead for fewer than three epochs."""
    root, labels = dead_root
    dead = [[], [3], [3], [], [3], [3, 7], [3, 7], [], []]
    assert dead_class_stop(dead) == (7, [3])
    recipe = recipe_from_dict(scripted_recipe(labels[:N_DEAD], steps_per_epoch=2, batch_size=BATCH_DEAD, dead=dead,
                                              subset=N_DEAD, epochs=9, lr=LR, save_every=1), "test")
    with pytest.raises(TrainingError) as stop:
        Trainer(recipe, tmp_path, data_root=root, progress=False).fit()
    message = str(stop.value)
    assert message.startswith("epoch 7: the class map of '3' was zero on every training image for 3 epochs (1 of 10")
    assert "last.pt (epoch 6) is kept" in message
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: epoch")]
    assert [line.split(": the class map")[0] for line in warned] == [
        "warning: epoch 2", "warning: epoch 3", "warning: epoch 5", "warning: epoch 6"]
    assert warned[0].startswith("warning: epoch 2: the class map of '3' was zero on every training image")
    assert warned[3].startswith("warning: epoch 6: the class maps of '3', '7' were zero on every training image")


@pytest.mark.parametrize("dead_steps, stop_step", [
    (list(range(0, 45, 2)), None),  # 23 all-zero steps, never two in a row
    (list(range(0, 19)) + list(range(20, 39)), None),  # 19 in a row, one live step, 19 more
    (list(range(5, 25)), 25),  # 20 in a row: stop at the 20th (step 25, 1-based)
])
def test_first_epoch_dead_maps_need_twenty_steps_in_a_row(dead_root, tmp_path: Path, dead_steps: list[int],
                                                          stop_step: int | None, capsys: pytest.CaptureFixture) -> None:
    """Catches a first-epoch counter of all-zero steps that is never reset by a live step (the first two cases
    would stop), or that stops before 20 steps in a row."""
    root, labels = dead_root
    recipe = recipe_from_dict(scripted_recipe(labels, steps_per_epoch=45, batch_size=1, all_dead_steps=dead_steps,
                                              epochs=1, lr=LR), "test")
    trainer = Trainer(recipe, tmp_path, data_root=root, progress=False)
    if stop_step is None:
        assert trainer.fit()["epochs_run"] == 1
        # every class was alive at some step (the last step is dead in the first case): no class map is dead
        assert "the class map" not in capsys.readouterr().err
    else:
        with pytest.raises(TrainingError, match=rf"^epoch 1, step {stop_step}: every class map is zero, so the "
                                                r"loss sits at ln\(10\) = 2\.302585"):
            trainer.fit()


def _batch(bias: list[float], odd_share: float, images: int) -> torch.Tensor:
    """Logits of a fully connected head whose maps died: its biases for every image, but one image (lit by a dropout
    mask) off by ``odd_share`` of the largest bias in every class."""
    logits = torch.tensor(bias).repeat(images, 1)
    logits[-1] += odd_share * max(abs(b) for b in bias)
    return logits


BIASES = [0.05, -0.12, 0.2, 0.0, -0.03, 0.08, 0.11, -0.2, 0.04, 0.01]  # as fc biases drift after their maps die


@pytest.mark.parametrize("scale, odd_share, epoch, images, stops", [
    (1.0, 0.0, 0, 8, True),  # the same logits for every image
    (1.0, 0.0025, 0, 8, True),  # one image 0.25% off: within SAME_OUTPUT_SPREAD (0.5%)
    (1.0, 0.01, 0, 8, False),  # one image 1% off: a network that trains comes this close (mnist, 1.1%)
    (0.001, 0.01, 0, 8, False),  # tiny logits 1% apart: the tolerance is relative
    (1.0, 0.0, 1, 8, False),  # after the first epoch the loss watches a collapse, not each step
    (1.0, 0.0, 0, 1, False),  # a batch of one image always has one output: it says nothing
])
def test_one_output_for_every_image_in_the_first_epoch_stops_a_head_with_biases(
        scale: float, odd_share: float, epoch: int, images: int, stops: bool) -> None:
    """results/cifar10-fc-dropout-authors-bf16-e8-dead-maps/: at lr 0.1 cccp6's ten maps died in the first epoch
    and the fully connected head gave nearly its biases for every image (the few images that dropout's masks still
    lit kept the logits apart by under 0.5% of their size in 20 steps in a row by step 194). Its logits are not zero,
    so the all-zero check let it train at chance. Catches a check of exact equality (the 0.25% case), a tolerance
    that stops the mnist recipe (the 1% case), an absolute tolerance (the tiny case), a count that ignores the batch
    size, or a check that also runs after the first epoch."""
    monitor, logits = HealthMonitor([str(k) for k in range(10)], lr=0.1), _batch(BIASES, odd_share, images) * scale
    for step in range(19):
        monitor.after_step(epoch, step, 312, torch.tensor(2.3), logits, "")
    if not stops:
        monitor.after_step(epoch, 19, 312, torch.tensor(2.3), logits, "")
        return
    with pytest.raises(TrainingError, match=r"^epoch 1, step 20: the network gives the same logits for every image "
                                            r"\(to within 0\.5%\), so it cannot tell them apart .*--set lr=0\.05\)"):
        monitor.after_step(epoch, 19, 312, torch.tensor(2.3), logits, "")


# ------------------------------------------------------------------------------- a collapse to chance

def scripted_loss(wrong_fraction: float) -> float:
    """The scripted net's epoch loss, from softmax cross-entropy by hand: logit 4 for the predicted class, 1 for
    the nine others; a wrong image's label has logit 1."""
    normalizer = math.exp(4) + 9 * math.exp(1)
    right, wrong = math.log(normalizer) - 4, math.log(normalizer) - 1
    return (1 - wrong_fraction) * right + wrong_fraction * wrong


@pytest.mark.parametrize("wrong, chance, stop", [
    (4, [False, True, True, True, False], (4, 2)),  # learned (loss 1.57), then at ln(10) for 3 epochs
    (4, [True, True, True, True, False], None),  # a slow start at ln(10) has not learned anything yet
    (4, [False, True, True, False, True, True, False], None),  # never 3 epochs in a row
    (5, [False, True, True, True, False], None),  # the loss fell to 1.87 only, less than 0.5 below ln(10)
])
def test_a_loss_back_at_ln_k_for_three_epochs_after_learning_stops_training(
        dead_root, tmp_path: Path, wrong: int, chance: list[bool], stop: tuple[int, int] | None) -> None:
    """A fully connected head collapses to chance with no class map at zero (results/cifar10-fc-h200-step115/):
    the loss itself must stop it. Catches a check that never runs, that counts epochs that are not consecutive,
    that stops a slow start or that takes any loss below ln(10) for learning."""
    assert math.log(10) - scripted_loss(0.4) > 0.5 > math.log(10) - scripted_loss(0.5)
    root, labels = dead_root
    recipe = recipe_from_dict(scripted_recipe(labels[:N_DEAD], steps_per_epoch=2, batch_size=BATCH_DEAD,
                                              wrong=[wrong], chance=chance, subset=N_DEAD, epochs=len(chance),
                                              lr=LR), "test")
    trainer = Trainer(recipe, tmp_path, data_root=root, progress=False)
    if stop is None:
        assert trainer.fit()["epochs_run"] == len(chance)
        return
    with pytest.raises(TrainingError) as stopped:
        trainer.fit()
    epoch, first = stop
    assert str(stopped.value).startswith(
        f"epoch {epoch}: the training loss has been at least ln(10) = 2.302585 since epoch {first} (2.3026 in the "
        f"last), after falling to {scripted_loss(wrong / N_DEAD):.4f}: the network collapsed")
    assert "--set lr=0.02" in str(stopped.value)


def test_a_constant_output_above_ln_k_is_a_collapse_too() -> None:
    """A fully connected head that answers the same for every image scores a little above ln(10): its biases are
    not uniform. The epoch losses of results/cifar10-fc-authors-bf16-e42-collapsed/ (lowest 0.8225 in epoch 18;
    epochs 38-42) stop it after epoch 42; a loss that stays 0.01 below ln(10) does not. Catches a check that only
    looks within a tolerance of ln(10) on both sides, which let that run train on at chance."""
    monitor = HealthMonitor([str(k) for k in range(10)], lr=0.1)
    monitor.end_epoch_loss(17, 0.8225)
    for epoch, loss in ((37, 1.3414), (38, 1.9937), (39, 2.3060), (40, 2.3059)):
        monitor.end_epoch_loss(epoch, loss)
    with pytest.raises(TrainingError, match=r"^epoch 42: the training loss has been at least ln\(10\) = 2\.302585 "
                                            r"since epoch 40 \(2\.3062 in the last\), after falling to 0\.8225: "
                                            r".*--set lr=0\.02\)\.$"):
        monitor.end_epoch_loss(41, 2.3062)
    below = HealthMonitor([str(k) for k in range(10)], lr=0.1)
    for epoch, loss in enumerate([0.8225] + [math.log(10) - 0.01] * 5):
        below.end_epoch_loss(epoch, loss)


@pytest.mark.parametrize("chance, warned", [([True, False], True), ([False], False)])
def test_a_first_epoch_at_ln_k_warns_and_goes_on(dead_root, tmp_path: Path, chance: list[bool], warned: bool,
                                                 capsys: pytest.CaptureFixture) -> None:
    """Live but tiny maps leave the first epoch's loss at ln(K): a warning, not a stop. Catches a warning that never
    fires, or fires after a first epoch that learned."""
    root, labels = dead_root
    recipe = recipe_from_dict(scripted_recipe(labels[:N_DEAD], steps_per_epoch=2, batch_size=BATCH_DEAD,
                                              chance=chance, subset=N_DEAD, epochs=2, lr=LR), "test")
    assert Trainer(recipe, tmp_path, data_root=root, progress=False).fit()["epochs_run"] == 2
    warning = ("warning: after epoch 1 the training loss is still ln(10) = 2.3026: the class maps are alive but tiny "
               "(the signal shrinks through the layers). Training goes on; if it stays there, raise the init std or "
               "the learning rate.")
    assert (warning in capsys.readouterr().err.splitlines()) == warned


def test_a_resumed_run_stops_at_the_same_collapse(dead_root, tmp_path: Path) -> None:
    """Cut after epoch 4, two epochs into the collapse, the resumed run must still stop after epoch 5; a run cut
    after it learned and resumed at chance must not pass for a slow start. Catches a check whose memory of the
    losses is not rebuilt from the run's history on a resume."""
    root, labels = dead_root
    chance = [False, False, True, True, True, False]
    recipe = recipe_from_dict(scripted_recipe(labels[:N_DEAD], steps_per_epoch=2, batch_size=BATCH_DEAD,
                                              wrong=[4], chance=chance, subset=N_DEAD, epochs=len(chance),
                                              lr=LR), "test")
    assert Trainer(recipe, tmp_path, data_root=root, progress=False, stop_after=4).fit()["epochs_run"] == 4
    with pytest.raises(TrainingError, match=r"^epoch 5: the training loss has been at least ln\(10\) = 2\.302585 "
                                            r"since epoch 3"):
        Trainer(recipe, tmp_path, data_root=root, resume=True, progress=False).fit()


# -------------------------------------------------------------------------------- a parameter turned NaN

def test_a_parameter_that_becomes_nan_stops_training_and_keeps_the_last_checkpoint(dead_root, tmp_path: Path) -> None:
    """The last step of epoch 2 leaves a weight NaN while every loss of the epoch was finite: only the check of
    the parameters after the epoch can see it. Catches that check missing or its message wrong."""
    root, labels = dead_root
    recipe = recipe_from_dict(scripted_recipe(labels[:N_DEAD], steps_per_epoch=2, batch_size=BATCH_DEAD,
                                              subset=N_DEAD, epochs=4, lr=LR, save_every=1), "test")
    trainer = Trainer(recipe, tmp_path, data_root=root, progress=False)
    steps = []

    def poison(optimizer, args, kwargs) -> None:
        steps.append(1)
        if len(steps) == 4:  # the last step of epoch 2
            with torch.no_grad():
                trainer.model.weight[3, 0] = float("nan")

    trainer.optimizer.register_step_post_hook(poison)
    with pytest.raises(TrainingError) as stop:
        trainer.fit()
    assert str(stop.value) == (f"parameter weight holds NaN or Inf after epoch 2: training diverged. The last good "
                               f"checkpoint {tmp_path / 'last.pt'} (epoch 1) is kept.")
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    assert [r["epoch"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1]


def _poisoned_trainer(dead_root, tmp_path: Path, poisoned_after: int) -> Trainer:
    """A scripted run of 10 steps per epoch whose weight turns NaN after optimizer step ``poisoned_after``, so the
    next forward's logits, and so its loss, are NaN."""
    root, labels = dead_root
    recipe = recipe_from_dict(scripted_recipe(labels[:20], steps_per_epoch=10, batch_size=2, subset=20, epochs=2,
                                              lr=LR), "test")
    trainer = Trainer(recipe, tmp_path, data_root=root, progress=False)
    steps = []

    def poison(optimizer, args, kwargs) -> None:
        steps.append(1)
        if len(steps) == poisoned_after:
            with torch.no_grad():
                trainer.model.weight[3, 0] = float("nan")

    trainer.optimizer.register_step_post_hook(poison)
    return trainer


@pytest.mark.parametrize("poisoned_after", [2, 9])
def test_on_a_cpu_a_nan_loss_is_reported_at_the_step_it_appeared(dead_root, tmp_path: Path,
                                                                 poisoned_after: int) -> None:
    """A CPU looks at the loss after every step: a NaN from step 3 is reported at step 3, one from the epoch's last
    step (10) at step 10, with no window. Catches a check that skips steps, or looks at another total."""
    trainer = _poisoned_trainer(dead_root, tmp_path, poisoned_after)
    with pytest.raises(TrainingError, match=rf"^the loss became nan at epoch 1, step {poisoned_after + 1}: training "
                                            r"diverged\. No checkpoint was written\."):
        trainer.fit()


# ---------------------------------------- the periodic NaN check of CUDA devices, run on a CPU with a forced interval

@pytest.mark.parametrize("poisoned_after, reported", [(1, 4), (8, 10)])
def test_the_periodic_nan_check_reports_the_window_it_looked_at(dead_root, tmp_path: Path, poisoned_after: int,
                                                                reported: int) -> None:
    """With the loss looked at every 4 steps (as CUDA looks every SYNC_EVERY), a NaN from step 2 is reported at
    step 4, and one from step 9 at the epoch's last step (10), with the window it may have come from."""
    trainer = _poisoned_trainer(dead_root, tmp_path, poisoned_after)
    trainer.health.check_every = 4  # what a CUDA device does every CUDA_CHECK_EVERY steps
    with pytest.raises(TrainingError, match=rf"^the loss became nan at epoch 1, step {reported} \(or up to 3 steps "
                                            r"before\): training diverged"):
        trainer.fit()
