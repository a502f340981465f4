"""The `nin` command: nin train | reproduce | check | report | eval | explain | predict | export | convert | bench |
data | models | recipes."""
from __future__ import annotations

import argparse
import errno
import json
import os
import platform
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Sequence

import torch

from nin import __version__
from nin.data.download import MIRRORS

Handler = Callable[[argparse.Namespace], int]


# where a command writes, for the remedy of a filesystem fault ("write elsewhere (--out)")
_OUTPUT_OPTIONS = {"train": "--out", "reproduce": "--runs-dir, --results-dir", "check": "--out, --json",
                   "report": "--out", "explain": "--out", "export": "--out", "convert": "--out", "bench": "--json"}
_FILESYSTEM_FAULTS = {  # errno: what it means, and whether more space is the cure
    errno.ENOSPC: ("no space left on the device", True),
    errno.EDQUOT: ("the disk quota is exceeded", True),
    errno.EFBIG: ("the file is larger than this file system allows", True),
    errno.EROFS: ("the file system is read-only", False),
    errno.EACCES: ("permission denied", False),
    errno.EPERM: ("operation not permitted", False),
}


def _recipe_overrides(args: argparse.Namespace) -> list[str | tuple[str, str]]:
    """The --set items plus the shortcut options, as recipe overrides (a shortcut with its option, for errors)."""
    overrides: list[str | tuple[str, str]] = list(args.set)
    for key in ("epochs", "seed", "device", "precision", "subset", "max_minutes", "save_every"):
        value = getattr(args, key)
        if value is not None:  # repr keeps nan and inf as TOML reads them, so the recipe can name them
            literal = json.dumps(value) if isinstance(value, str) else repr(value)
            overrides.append((f"--{key.replace('_', '-')} {value}", f"{key}={literal}"))
    if args.channels_last:
        overrides.append("channels_last=true")
    return overrides


def _print_json(value: object) -> None:
    """JSON on stdout; a NaN or Inf that got this far is a bug, never the bare ``NaN`` that JSON parsers reject."""
    print(json.dumps(value, indent=2, allow_nan=False))


def _command_line() -> str:
    return "nin " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _train(args: argparse.Namespace) -> int:
    from nin.train import Trainer, apply_overrides, load_recipe

    recipe = apply_overrides(load_recipe(args.recipe), _recipe_overrides(args))
    out = args.out or f"runs/{recipe.name}"
    summary = Trainer(recipe, out, data_root=args.data_dir, resume=args.resume, overwrite=args.overwrite,
                      command=_command_line()).fit()
    if summary is not None:
        _print_final(summary)
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nin.experiments.reproduce import reproduce

    summaries = reproduce(args.experiment, runs_dir=Path(args.runs_dir), results_dir=Path(args.results_dir),
                          data_root=args.data_dir, overrides=_recipe_overrides(args), only=args.only, tag=args.tag,
                          command=_command_line(), jobs=args.jobs)
    for summary in summaries:
        _print_final(summary)
    speeds = [summary["final"]["images_per_s"] for summary in summaries if summary["final"]]
    if 1 < len(speeds) <= args.jobs:  # all ran at once
        print(f"{len(speeds)} runs at once: {sum(speeds) / len(speeds):,.0f} training images/s per run in its last "
              f"epoch, {sum(speeds):,.0f} in all")
    return 0


def _check(args: argparse.Namespace) -> int:
    from nin.experiments.check import check_record, format_result
    from nin.utils.atomic import atomic_write_text

    result = check_record(args.record, epochs=args.epochs, tolerance=args.tolerance, data_root=args.data_dir,
                          device=args.device, out_dir=args.out)
    if args.json:
        atomic_write_text(args.json, json.dumps({**result.to_dict(), "command": _command_line()}, indent=2,
                                                allow_nan=False) + "\n")
    print(format_result(result))
    return 1 if result.verdict == "differs" else 0


def _report(args: argparse.Namespace) -> int:
    from nin.experiments.report import write_report

    print(write_report(args.results_dir, args.out))
    return 0


def _print_final(summary: dict) -> None:
    paper = summary["paper_error"]
    peer = summary.get("peer_error")
    reference = (f"paper: {paper:.2f}% ({summary['paper_ref']})" if paper is not None else
                 f"no paper number; peer reference: {peer:.2f}% ({summary['peer_ref']})" if peer is not None else
                 "no paper number")
    final = summary["final"] or {}
    lines = [f"{summary['recipe']}: {summary['epochs_run']} epochs in {summary['wall_time_s'] / 60:.1f} min"]
    if "valid_error" in final and summary["eval_split"] not in summary["tests"]:
        lines.append(f"  {summary['eval_split']} error {final['valid_error']:.2f}%")
    for split, result in summary["tests"].items():
        if "skipped" in result:
            lines.append(f"  {split}: not evaluated ({result['skipped']})")
        else:
            lines.append(f"  test error {result['error']:.2f}% on {result['description']}")
    lines.append(f"  {reference}")
    print("\n".join(lines))


def _eval(args: argparse.Namespace) -> int:
    from nin.data import shares_images
    from nin.inference.evaluate import evaluate
    from nin.inference.pretrained import open_trained
    from nin.utils.hardware import slow_bf16_warning

    trained = open_trained(args.checkpoint, data_dir=args.data_dir)
    data = trained.load_split(args.split, args.data_dir)
    trained_on = trained.recipe.get("train_split")
    if trained_on is not None and shares_images(args.split, trained_on):
        print(f"nin eval: warning: {args.checkpoint} was trained on {trained.dataset} {trained_on!r}, which holds the "
              f"images of {args.split!r}: this error is measured on images it trained on, not held-out ones",
              file=sys.stderr)
    trained.check_images(data.images, data.description)
    model, precision = trained.model, args.precision
    slow = slow_bf16_warning(torch.device("cpu"), precision)  # nin eval runs on the CPU
    if slow:
        print(f"nin eval: warning: {slow}", file=sys.stderr)
    if precision == "int8":
        from nin.inference.quantize import quantize_int8

        calibration = trained.load_split("train", args.data_dir).images[:args.calibration]
        model, precision = quantize_int8(model, trained.preprocess.transform(calibration)), "fp32"
    flip = trained.recipe.get("test_time_flip", False) if args.flip is None else args.flip
    result = evaluate(model, trained.preprocess.transform(data.images), data.labels, len(trained.classes),
                      precision=precision, channels_last=precision == "bf16", flip=flip)
    per_class = {name: acc for name, acc in zip(data.classes, result.per_class_accuracy) if acc is not None}
    if args.json:
        _print_json({"split": args.split, "description": data.description, "lossy": data.lossy,
                     "precision": args.precision, "flip": flip, "images": result.count, "error": result.error,
                     "per_class_accuracy": per_class})
        return 0
    print(f"{data.description}\ntest error {result.error:.2f}% ({result.count} images, {args.precision})")
    for name, acc in per_class.items():
        print(f"  {name:>12s}  {acc:6.2f}%")
    return 0


def _explain(args: argparse.Namespace) -> int:
    from nin.inference.explain import explain_command

    for path in explain_command(args.checkpoint, args.images, args.split, args.n, args.out, args.data_dir):
        print(path)
    return 0


def _predict(args: argparse.Namespace) -> int:
    from nin.inference.predict import predict_files
    from nin.inference.pretrained import open_trained

    predictions, errors = predict_files(open_trained(args.checkpoint, data_dir=args.data_dir), args.images,
                                        args.top_k)
    for message in errors:
        print(f"nin predict: error: {message}", file=sys.stderr)
    if args.json:
        _print_json([p.to_dict() for p in predictions])
    for p in [] if args.json else predictions:
        print(p.source)
        for name, prob in zip(p.classes, p.probabilities):
            print(f"  {100 * prob:6.2f}%  {name}")
    return 2 if errors else 0


def _export(args: argparse.Namespace) -> int:
    from nin.inference.export import export_checkpoint

    for path in export_checkpoint(args.checkpoint, args.format, args.out, refit_preprocess=args.refit_preprocess,
                                  data_dir=args.data_dir):
        print(f"wrote {path}")
    return 0


def _convert_caffe(args: argparse.Namespace) -> int:
    from nin.inference.caffe import convert_command

    for path in convert_command(args.file, args.out, data_dir=args.data_dir, architecture=args.architecture,
                                classes=args.classes):
        print(f"wrote {path}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from nin.bench.runner import BenchConfig, bench_command

    config = BenchConfig(steps=args.steps, repeats=args.repeats, batch_size=args.batch_size,
                         eval_batch_size=args.eval_batch_size, images=args.images, device=args.device,
                         data_dir=args.data_dir, compile=args.compile, cuda_graphs=args.cuda_graphs,
                         threads=args.threads, memory=args.memory, matmul_size=args.matmul_size, layers=args.layers,
                         seed=args.seed, precision=args.precision, inference_precision=args.inference_precision)
    command = "nin " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    print(bench_command(config, command, args.json))
    return 0


def _data_download(args: argparse.Namespace) -> int:
    from nin.data import download_dataset, resolve_root

    root = resolve_root(args.data_dir)
    for name in args.names:
        print(f"{name}: fetching the official files into {root} (checked against their published MD5)", file=sys.stderr)
        for path in download_dataset(name, root):
            print(path)
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _models(args: argparse.Namespace) -> int:
    import nin
    from nin.inference.pretrained import pretrained_for

    names = nin.list_models(args.pattern)
    weights = {name: ",".join(p.tag for p in pretrained_for(name)) or "-" for name in names}
    width = max([len("weights"), *map(len, weights.values())])
    print(f"{'model':24s} {'parameters':>10s} {'M MACs':>9s}  {'input':9s}  {'weights':{width}s}  where in the paper")
    for name in names:
        info = nin.model_info(name)
        prof = nin.profile_model(nin.models.create_model(name), info.input_size)
        size = "×".join(map(str, info.input_size))
        print(f"{name:24s} {prof.parameters:>10,d} {prof.multiply_adds / 1e6:9.2f}  {size:9s}  "
              f"{weights[name]:{width}s}  {info.paper}")
    return 0


def _recipes(args: argparse.Namespace) -> int:
    from nin.train import list_recipes, load_recipe

    print(f"{'recipe':20s} {'model':24s} {'dataset':14s} {'paper':>7s}  paper row")
    for name in list_recipes():
        r = load_recipe(name)
        paper = f"{r.paper_error}%" if r.paper_error is not None else "-"
        print(f"{name:20s} {r.model:24s} {r.dataset:14s} {paper:>7s}  {r.paper_ref}")
    return 0


CONVERT_CAFFE_DESCRIPTION = """\
Convert one of the authors' Caffe model-zoo files (cifar10_nin.caffemodel, nin_imagenet.caffemodel or
nin_imagenet_conv.caffemodel) into a .safetensors weights file with its JSON sidecar, for `nin eval`,
`nin predict` and nin.inference.weights.load_weights. Layers are matched by the prototxt's names and
checked shape by shape. The CIFAR-10 model expects GCN + ZCA fitted on the 50,000 CIFAR-10 training
images, read from --data-dir; the ImageNet model expects BGR 224x224 crops minus Caffe's mean pixel,
which the weights file carries. Also writes WEIGHTS.caffe.json: the source file's SHA-1, the layer-name
map and the preprocessing."""


DATA_DIR_HELP = ("dataset root (default: $NIN_DATA, else ~/.cache/nin); for dataset folder, your folder of class "
                 "folders")
RUN_DATA_DIR_HELP = ("dataset root (default: the root the run was trained on while it exists, else $NIN_DATA, else "
                     "~/.cache/nin)")

FIRST_USE_DATA_DIR_HELP = ("dataset root holding the training images of weights whose preprocessing is fitted on "
                           "first use (default: $NIN_DATA, else ~/.cache/nin)")

CHECKPOINT_HELP = "a checkpoint written by `nin train` (RUN/last.pt), a .safetensors weights file, or a shipped " \
    "model name (nin_mnist)"


def _add_recipe_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, help="train this many epochs (the recipe's schedule is laid out over them)")
    p.add_argument("--seed", type=int, help="random seed of initialization, shuffling, augmentation and dropout")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="where to train (default: the recipe's, auto)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"],
                   help="arithmetic of the forward pass (fp16: CUDA only; default: the recipe's)")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format (faster on CPUs and GPUs)")
    p.add_argument("--subset", type=int, help="train on the first N training images only")
    p.add_argument("--max-minutes", type=float, help="stop cleanly after the epoch that passes N minutes of wall time")
    p.add_argument("--save-every", type=int, metavar="N",
                   help="write the checkpoint and the curves every N epochs (default 1); the last epoch is always saved")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any recipe field")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nin", description="Network In Network (Lin, Chen & Yan, ICLR 2014)")
    parser.add_argument("--version", action="version", help="print the version of nin and torch, then exit",
                        version=f"nin {__version__} (torch {torch.__version__}, Python {platform.python_version()})")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a recipe (see `nin recipes`)")
    p.add_argument("--recipe", required=True, help="a shipped recipe name or a .toml file")
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument("--out", help="run folder for checkpoints and records (default: runs/RECIPE)")
    _add_recipe_options(p)
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--overwrite", action="store_true", help="replace the run that OUT holds (without it, a folder "
                   "that holds a run needs --resume)")
    p.set_defaults(handler=_train)

    p = sub.add_parser("reproduce", help="run the recipes of a paper table or figure, records into results/")
    p.add_argument("experiment", nargs="+", help="table1, table2, table3, table4, table5, fig3, fashion-mnist "
                   "(several: their recipes, each once)")
    p.add_argument("--only", nargs="+", metavar="RECIPE", help="run only these recipes of the experiments")
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="train N recipes at once, each in a process of "
                   "its own with its output in RUNS_DIR/RUN.log (a GPU that one small run leaves idle)")
    p.add_argument("--tag", help="name a variant (e.g. a shortened schedule): records go to results/RECIPE-TAG")
    p.add_argument("--runs-dir", default="runs", help="where checkpoints go (large; default: runs)")
    p.add_argument("--results-dir", default="results", help="where the small records go (default: results)")
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    _add_recipe_options(p)
    p.set_defaults(handler=_reproduce)

    p = sub.add_parser("check", help="re-run a record's first epochs and compare them with the record")
    p.add_argument("record", help="a run record: a folder holding recipe.toml, metrics.jsonl and summary.json")
    p.add_argument("--epochs", type=_positive, default=1, help="how many epochs to re-run (default 1; all of them "
                   "also compares the test errors)")
    p.add_argument("--tolerance", type=float, default=0.0, metavar="PP",
                   help="allowed difference of each error, in %% points (default 0: bit-identical)")
    p.add_argument("--data-dir", help=RUN_DATA_DIR_HELP)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default: the record's")
    p.add_argument("--out", help="keep the rerun's files here (default: a temporary folder, removed)")
    p.add_argument("--json", metavar="OUT", help="also write the comparison as JSON")
    p.set_defaults(handler=_check)

    p = sub.add_parser("report", help="regenerate the results page from results/")
    p.add_argument("--results-dir", default="results", help="the run records to read (default: results)")
    p.add_argument("--out", default="docs/results.md", help="the page to write (default: docs/results.md)")
    p.set_defaults(handler=_report)

    p = sub.add_parser("eval", help="test error and per-class accuracy of a checkpoint")
    p.add_argument("checkpoint", help=CHECKPOINT_HELP)
    p.add_argument("--split", default="test", help="the split of the checkpoint's dataset to evaluate (default: test)")
    p.add_argument("--data-dir", help=RUN_DATA_DIR_HELP)
    p.add_argument("--precision", choices=["fp32", "bf16", "int8"], default="fp32",
                   help="int8: a statically quantized copy for x86 CPUs (see nin.inference.quantize)")
    p.add_argument("--calibration", type=_positive, default=2000, metavar="N",
                   help="int8: calibrate on the first N training images (default 2000)")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="test-time flips: average the logits of each image and its mirror image (default: as the "
                   "run's recipe evaluated, test_time_flip)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=_eval)

    p = sub.add_parser("explain", help="class confidence maps of images as PNG figures (the paper's Figure 4)")
    p.add_argument("checkpoint", help=CHECKPOINT_HELP)
    p.add_argument("images", nargs="*", help="PNG/JPEG files (default: the first --n images of --split)")
    p.add_argument("--split", default="test", help="the split of the checkpoint's dataset to draw (default: test)")
    p.add_argument("--n", type=_positive, default=8, help="how many images of the split (default 8)")
    p.add_argument("--out", help="folder for explain-000.png, ... (default: explain/ in the checkpoint's folder; "
                   "for shipped weights, explain/ here)")
    p.add_argument("--data-dir", help=RUN_DATA_DIR_HELP)
    p.set_defaults(handler=_explain)

    p = sub.add_parser("predict", help="top-k classes of PNG/JPEG files (resize rule: docs/explain.md)")
    p.add_argument("checkpoint", help=CHECKPOINT_HELP)
    p.add_argument("images", nargs="+", help="PNG/JPEG files, any size, grey or colour")
    p.add_argument("--top-k", type=_positive, default=5, help="how many classes to list per image (default 5)")
    p.add_argument("--json", action="store_true", help="print the predictions as JSON")
    p.add_argument("--data-dir", help=FIRST_USE_DATA_DIR_HELP)
    p.set_defaults(handler=_predict)

    p = sub.add_parser("export", help="ONNX / TorchScript with the preprocessing built in, or shipped safetensors")
    p.add_argument("checkpoint", help="a checkpoint written by `nin train` (RUN/last.pt)")
    p.add_argument("--format", required=True, choices=["onnx", "torchscript", "safetensors"],
                   help="onnx or torchscript: preprocessing and network in one graph; safetensors: shipped weights")
    p.add_argument("--out", help="output file (default: the checkpoint with .onnx, .torchscript.pt or .safetensors)")
    p.add_argument("--refit-preprocess", action="store_true",
                   help="safetensors from a checkpoint: leave the fitted preprocessing out of the file (CIFAR-10's "
                        "ZCA: 37.7 MB); it is fitted again on first use from the run's training split, checked by "
                        "its pixels' SHA-256")
    p.add_argument("--data-dir", help=RUN_DATA_DIR_HELP)
    p.set_defaults(handler=_export)

    p = sub.add_parser("convert", help="turn another framework's trained weights into ours (docs/convert.md)")
    formats = p.add_subparsers(dest="source_format", required=True)
    p = formats.add_parser("caffe", help="the authors' Caffe model-zoo .caffemodel files",
                           description=CONVERT_CAFFE_DESCRIPTION)
    p.add_argument("file", help="the .caffemodel file")
    p.add_argument("--out", required=True, help="the weights file to write, WEIGHTS.safetensors (its JSON sidecars "
                   "go next to it)")
    p.add_argument("--data-dir", help="dataset root for fitting the CIFAR-10 model's GCN + ZCA (default: $NIN_DATA, "
                   "else ~/.cache/nin)")
    p.add_argument("--architecture", choices=["cifar10", "imagenet"],
                   help="which of the authors' networks the file holds (default: detected from its layers)")
    p.add_argument("--classes", help="a text file with one class name per line, in output order (e.g. Caffe's "
                   "synset_words.txt for ImageNet; default: the dataset's names)")
    p.set_defaults(handler=_convert_caffe)

    p = sub.add_parser("bench", help="our training and inference speed against a plain PyTorch port (docs/speed.md)")
    p.add_argument("--steps", type=_positive, default=20, help="training steps per timed run (default 20)")
    p.add_argument("--repeats", type=_positive, default=5, help="timed runs per side, interleaved (default 5)")
    p.add_argument("--batch-size", type=_positive, default=128, help="training batch of both sides (default 128)")
    p.add_argument("--eval-batch-size", type=_positive, default=500, help="ours' inference batch (default 500)")
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16",
                   help="ours' training: bf16 autocast, or fp32 (for a CPU without bf16 instructions)")
    p.add_argument("--inference-precision", choices=["bf16", "fp32", "int8"], default="bf16",
                   help="ours' inference: bf16 autocast, fp32, or an int8 copy (x86 CPUs; see nin.inference.quantize)")
    p.add_argument("--images", type=_positive, default=10_000, help="size of the data slice (default 10000)")
    p.add_argument("--data-dir", help="dataset root holding CIFAR-10 (default: random uint8 images)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where to run (default: auto)")
    p.add_argument("--compile", action="store_true", help="torch.compile our model")
    p.add_argument("--cuda-graphs", action="store_true", help="our training step's forward and backward as a CUDA "
                   "graph, as the recipe field cuda_graphs trains (GPU only)")
    p.add_argument("--threads", type=_positive, help="torch.set_num_threads for both sides")
    p.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True,
                   help="peak memory of each side and phase in a fresh process (default: on)")
    p.add_argument("--matmul-size", type=_positive, help="n of the n×n peak products (default 3072 CPU, 8192 GPU)")
    p.add_argument("--layers", action=argparse.BooleanOptionalAction, default=True,
                   help="time each convolution alone (the convolution peak) and profile one step (default: on)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the data slice (default 0)")
    p.add_argument("--json", metavar="OUT", help="also write the report as JSON")
    p.set_defaults(handler=_bench)

    p = sub.add_parser("data", help="get the datasets: nin data download NAME")
    actions = p.add_subparsers(dest="data_action", required=True)
    p = actions.add_parser("download", help="fetch a dataset's official files into the data root, checked against "
                           "their published MD5 (needs internet)")
    p.add_argument("names", nargs="+", metavar="NAME", choices=list(MIRRORS), help=f"{', '.join(MIRRORS)}")
    p.add_argument("--data-dir", help="dataset root to fetch into (default: $NIN_DATA, else ~/.cache/nin)")
    p.set_defaults(handler=_data_download)

    p = sub.add_parser("models", help="list the registered networks with their sizes")
    p.add_argument("pattern", nargs="?", help="only names matching this shell pattern, e.g. 'nin_cifar10*'")
    p.set_defaults(handler=_models)

    p = sub.add_parser("recipes", help="list the shipped recipes")
    p.set_defaults(handler=_recipes)
    return parser


def _filesystem_fault(err: OSError, command: str) -> str:
    """One line for a full disk, a read-only file system or a denied permission: which file, why, what to do."""
    from nin.utils.atomic import WriteError

    meaning, space = _FILESYSTEM_FAULTS[err.errno]
    writing = isinstance(err, WriteError)
    what = f"cannot write {err.filename}" if writing else str(err.filename or "a file")
    intact = " Nothing was half-written: every file has its last complete version." if writing else ""
    option = f" ({_OUTPUT_OPTIONS[command]})" if command in _OUTPUT_OPTIONS else ""
    if space:
        remedy = f"free some space or write elsewhere{option}"
    elif writing or command in _OUTPUT_OPTIONS:
        remedy = f"write elsewhere{option} or fix the permissions"
    else:
        remedy = "fix the permissions of the file and of its folders"
    resume = " with --resume, to continue from the last checkpoint" if command == "train" and writing else ""
    return f"{what}: {meaning}.{intact} To go on, {remedy}, then run the command again{resume}."


class _Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a job scheduler, `docker stop`) raised as an interrupt, so that it unwinds like Ctrl-C:
    files keep their last complete version and a run folder is unlocked."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if argv is None and args.command in ("train", "reproduce", "check", "eval", "bench"):
        from nin.utils.allocator import reexec_with_tuned_malloc

        reexec_with_tuned_malloc(sys.argv[1:])  # glibc reads the settings at process start only
    from nin.errors import NinError

    in_main_thread = threading.current_thread() is threading.main_thread()  # only it may set signal handlers
    previous_sigterm = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    try:
        code = args.handler(args)
        sys.stdout.flush()  # a reader that left (`nin models | head`) shows here, in the handling below
        return code
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python exits
        return 141  # as a shell reports a command stopped by SIGPIPE
    except NinError as err:
        print(f"nin {args.command}: error: {err.cli}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno not in _FILESYSTEM_FAULTS:
            raise
        print(f"nin {args.command}: error: {_filesystem_fault(err, args.command)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        terminated = isinstance(stop, _Terminated)
        print("terminated" if terminated else "interrupted", file=sys.stderr)
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)  # 143 or 130, as a shell reports them
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous_sigterm or signal.SIG_DFL)  # None: a handler set outside Python


if __name__ == "__main__":
    sys.exit(main())
