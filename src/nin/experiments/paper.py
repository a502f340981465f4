"""The paper's result tables (test error, %), with the recipe that reproduces each NIN row."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Row:
    method: str
    error: float
    recipe: str | None = None  # the recipe that reproduces this row, if we have one


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    dataset: str
    rows: tuple[Row, ...]
    extra_recipes: tuple[str, ...] = field(default=())  # run too, reported beside the table (not paper rows)

    @property
    def recipes(self) -> list[str]:
        """Each recipe once, in table order (a row may reuse an extra recipe, as Fashion-MNIST's peer row does)."""
        return list(dict.fromkeys([r.recipe for r in self.rows if r.recipe] + list(self.extra_recipes)))


EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in [
    Experiment("table1", "Table 1: CIFAR-10 test error", "cifar10", (
        Row("Stochastic Pooling", 15.13), Row("CNN + Spearmint", 14.98), Row("Conv. maxout + Dropout", 11.68),
        Row("NIN + Dropout", 10.41, "cifar10"),
        Row("CNN + Spearmint (augmentation)", 9.50), Row("Conv. maxout + Dropout (augmentation)", 9.38),
        Row("DropConnect + 12 networks (augmentation)", 9.32),
        Row("NIN + Dropout (augmentation)", 8.81, "cifar10-aug"),
    ), ("cifar10-fast", "cifar10-fast20", "cifar10-caffe")),
    Experiment("table2", "Table 2: CIFAR-100 test error", "cifar100", (
        Row("Learned Pooling", 43.71), Row("Stochastic Pooling", 42.51), Row("Conv. maxout + Dropout", 38.57),
        Row("Tree based priors", 36.85), Row("NIN + Dropout", 35.68, "cifar100"),
    )),
    Experiment("table3", "Table 3: SVHN test error", "svhn", (
        Row("Stochastic Pooling", 2.80), Row("Rectifier + Dropout", 2.78),
        Row("Rectifier + Dropout + Synthetic Translation", 2.68), Row("Conv. maxout + Dropout", 2.47),
        Row("NIN + Dropout", 2.35, "svhn"), Row("Multi-digit Number Recognition", 2.16),
        Row("DropConnect", 1.94),
    )),
    Experiment("table4", "Table 4: MNIST test error", "mnist", (
        Row("2-Layer CNN + 2-Layer NN", 0.53), Row("Stochastic Pooling", 0.47), Row("NIN + Dropout", 0.47, "mnist"),
        Row("Conv. maxout + Dropout", 0.45),
    ), ("mnist-fast",)),
    Experiment("table5", "Table 5 and Section 4.6: global average pooling vs fully connected tops, CIFAR-10",
               "cifar10", (
        Row("mlpconv + Fully Connected", 11.59, "cifar10-fc"),
        Row("mlpconv + Fully Connected + Dropout", 10.88, "cifar10-fc-dropout"),
        Row("mlpconv + Global Average Pooling", 10.41, "cifar10"),
        Row("conventional CNN + Fully Connected", 17.56, "cnn-fc"),
        Row("conventional CNN + Fully Connected + Dropout", 15.99, "cnn-fc-dropout"),
        Row("conventional CNN + Global Average Pooling", 16.46, "cnn-gap"),
    )),
    Experiment("fig3", "Figure 3: dropout between mlpconv layers, CIFAR-10", "cifar10", (
        Row("NIN without dropout", 14.51, "cifar10-nodropout"), Row("NIN with dropout", 10.41, "cifar10"),
    )),
    Experiment("fashion-mnist", "Fashion-MNIST (not in the paper): the MNIST network and procedure", "fashion-mnist",
               (Row("peer: 2 Conv+pooling, the dataset's own benchmark table (TensorFlow's doc)", 8.40, "fashion-mnist-fast"),),
               ("fashion-mnist", "fashion-mnist-fast", "fashion-mnist-d2l")),
]}
