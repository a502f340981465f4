"""Issue #20: every attack of the adversarial pass, and what happens now (docs/reliability.md, "Attacks").

Run folders belong to one process and are never replaced by accident; images are converted, never
clipped; a filesystem fault at any write is one line and keeps the last good files; non-finite weights
and statistics are refused before use; recipe values are checked by range before any work; exit codes
and checkpoint errors say what is really wrong.
"""
from __future__ import annotations

import contextlib
import copy
import errno
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from _checkpoints import MODEL_ARGS, checkpoint_state, synthetic_checkpoint, synthetic_digits
from _cli import TINY, fails, files
from PIL import Image
from safetensors.torch import load_file, save_file

import nin
import nin.checkpoint
from nin.checkpoint import load_checkpoint, save_checkpoint
from nin.cli import main
from nin.inference.predict import ImageFileError, fit_image, read_image
from nin.inference.weights import WeightsError, load_weights, weights_from_state_dict
from nin.models import create_model
from nin.train import Trainer, apply_overrides, load_recipe
from nin.train.metrics import read_metrics
from nin.train.run_folder import RUN_FILES, claim_run_folder
from nin.utils.runlock import LOCK_NAME, lock_folder

MEANING = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is exceeded",
           errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied"}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A run folder after one epoch of the CLI's TINY run; tests work on copies."""
    out = tmp_path_factory.mktemp("reliability") / "run"
    recipe = apply_overrides(load_recipe("mnist"), ["epochs=1", "subset=16", "batch_size=16", "eval_split=none",
                                                    "test_splits=[]", 'device="cpu"'])
    Trainer(recipe, out, data_root=shared_data, progress=False).fit()
    return out


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_checkpoint(tmp_path_factory.mktemp("reliability-checkpoint"))


def copy_run(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def contents(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in files(folder)}


def train(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--recipe", "mnist", "--data-dir", str(data), "--out", str(out), *TINY, *extra]


def png(path: Path, array: np.ndarray) -> str:
    Image.fromarray(array).save(path)
    return str(path)


# --------------------------------------------------------------------------------- one process per run folder

# The holder needs only the lock module: importing it without nin/__init__ (and torch) starts it in a blink.
HOLDER = """
import sys, types
package = types.ModuleType("nin")
package.__path__ = [sys.argv[1]]
sys.modules["nin"] = package
from nin.utils.runlock import lock_folder
lock = lock_folder(sys.argv[2])
print("locked", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def holder(folder: Path) -> Iterator[subprocess.Popen]:
    """Another process that holds ``folder``'s lock until the block ends (or it is killed)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(Path(nin.__file__).parent), str(folder)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "locked\n"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_a_second_process_is_refused_and_a_dead_holders_lock_is_taken_over(run: Path, tmp_path: Path,
                                                                           shared_data: Path,
                                                                           capsys: pytest.CaptureFixture) -> None:
    out = copy_run(run, tmp_path)
    before = contents(out)
    argv = train(shared_data, out, "--epochs", "2", "--resume")
    with holder(out) as proc:
        fails(capsys, argv, str(out), f"in use by process {proc.pid} on ", "wait until it ends")
        assert {k: v for k, v in contents(out).items() if k != LOCK_NAME} == before  # nothing touched
        proc.kill()  # SIGKILL: nothing of the holder runs any more, its lock file stays behind
        proc.wait()
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == proc.pid
        assert main(argv) == 0
    err = capsys.readouterr().err
    assert f"left locked by process {proc.pid} on " in err and "taking it over" in err
    assert load_checkpoint(out / "last.pt")["epoch"] == 2 and LOCK_NAME not in files(out)


def test_the_lock_is_released_when_a_run_crashes_or_is_stopped(run: Path, tmp_path: Path, shared_data: Path,
                                                               capsys: pytest.CaptureFixture,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    out = copy_run(run, tmp_path)
    argv = train(shared_data, out, "--epochs", "2", "--resume")
    sigterm_handler = signal.getsignal(signal.SIGTERM)
    for stop in (RuntimeError("a bug"), KeyboardInterrupt(), signal.SIGTERM):
        def stopped(self: Trainer, epoch: int, stop: BaseException | int = stop) -> None:
            if not isinstance(stop, BaseException):  # a real signal, as `kill` or a job scheduler sends it
                os.kill(os.getpid(), stop)
                time.sleep(5)  # the handler interrupts this at once
                pytest.fail("SIGTERM did not stop the run")
            raise stop

        monkeypatch.setattr(Trainer, "_train_epoch", stopped)
        if isinstance(stop, KeyboardInterrupt):
            assert main(argv) == 130 and "interrupted" in capsys.readouterr().err
        elif stop == signal.SIGTERM:
            assert main(argv) == 143 and "terminated" in capsys.readouterr().err
            assert signal.getsignal(signal.SIGTERM) == sigterm_handler  # the caller's handling is back
        else:
            with pytest.raises(RuntimeError, match="a bug"):
                main(argv)
        assert LOCK_NAME not in files(out)
        with lock_folder(out) as lock:  # free at once
            assert lock.held and lock.took_over is None


def test_start_up_deletes_only_the_temporary_files_of_its_own_files(run: Path, tmp_path: Path) -> None:
    out = copy_run(run, tmp_path)
    mine = [".last.pt.a1b2c3d4.tmp", ".metrics.jsonl.zz_99xyz.tmp"]
    others = [".last.onnx.a1b2c3d4.tmp", ".notes.txt.abcdefgh.tmp", ".last.pt.tmp"]  # an export's, a user's, no name
    for name in mine + others:
        (out / name).write_bytes(b"partial")
    with claim_run_folder(out, resume=True, overwrite=False):
        assert [n for n in files(out) if n.endswith(".tmp")] == sorted(others)


@pytest.mark.slow
def test_under_torchrun_every_rank_stops_when_rank_0_cannot_take_the_folder(tmp_path: Path,
                                                                            shared_data: Path) -> None:
    """Rank 0 alone locks and writes; one all-reduce tells the other ranks, which stop instead of waiting."""
    out = tmp_path / "run"
    ddp = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29519",
           "-m", "nin.cli", *train(shared_data, out)]
    with lock_folder(out):
        done = subprocess.run(ddp, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                              timeout=300)
    assert done.returncode != 0
    assert f"nin train: error: {out} is in use by process {os.getpid()}" in done.stderr, done.stderr[-3000:]
    assert files(out) == []


# ------------------------------------------------------------------------------- no run replaced by accident


def test_a_recorded_run_is_replaced_only_with_overwrite(run: Path, tmp_path: Path, shared_data: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    out = copy_run(run, tmp_path)
    before = contents(out)
    argv = train(shared_data, out, "--seed", "7")
    fails(capsys, argv, str(out), "already holds a run (last.pt, metrics.jsonl, summary.json)", "--resume",
          "--overwrite")
    fails(capsys, [*argv, "--resume", "--overwrite"], "--resume continues", "--overwrite replaces", "one of them")
    assert contents(out) == before
    assert main([*argv, "--overwrite"]) == 0
    old, new = load_checkpoint(run / "last.pt"), load_checkpoint(out / "last.pt")
    assert (old["recipe"]["seed"], new["recipe"]["seed"]) == (0, 7)
    assert not torch.equal(old["model"]["features.0.layers.0.weight"], new["model"]["features.0.layers.0.weight"])
    assert [row["epoch"] for row in read_metrics(out / "metrics.jsonl")] == [1]


def test_check_refuses_an_out_folder_that_holds_a_run(run: Path, capsys: pytest.CaptureFixture) -> None:
    before = contents(run)
    fails(capsys, ["check", str(run), "--out", str(run)], f"--out {run} already holds a run", "new or empty folder")
    assert contents(run) == before


# ------------------------------------------------------------------------------ images converted, not clipped


def png16(path: Path, samples: np.ndarray, color_type: int) -> Path:
    """A 16-bit PNG of ``samples`` (H, W) grey or (H, W, C), written byte by byte (Pillow writes 16-bit grey only)."""
    height, width = samples.shape[:2]
    rows = b"".join(b"\x00" + samples[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))
    return path


RNG = np.random.default_rng(20)
U8 = RNG.integers(0, 256, (6, 5, 4), dtype=np.uint8)
U16 = RNG.integers(0, 65536, (6, 5, 4), dtype=np.uint16)
INDEX = RNG.integers(0, 4, (6, 5), dtype=np.uint8)
PALETTE = RNG.integers(0, 256, (4, 3), dtype=np.uint8)
UNIT = RNG.random((6, 5)).astype(np.float32)


def _palette(mode: str) -> Image.Image:
    image = Image.frombytes("P", (5, 6), INDEX.tobytes())
    image.putpalette(PALETTE.flatten().tolist())
    return image.convert(mode)


# mode: (the image, the network's channels, the expected uint8 (H, W, C), computed from the raw samples)
MODES = {
    "1": (lambda: Image.fromarray(U8[..., 0] > 127), 1, lambda: (U8[..., :1] > 127) * 255),
    "L": (lambda: Image.fromarray(U8[..., 0]), 1, lambda: U8[..., :1]),
    "LA": (lambda: Image.fromarray(U8[..., :2]), 1, lambda: U8[..., :1]),
    "RGB": (lambda: Image.fromarray(U8[..., :3]), 3, lambda: U8[..., :3]),
    "RGBA": (lambda: Image.fromarray(U8), 3, lambda: U8[..., :3]),
    "P": (lambda: _palette("P"), 3, lambda: PALETTE[INDEX]),
    "PA": (lambda: _palette("PA"), 3, lambda: PALETTE[INDEX]),
    # Pillow's CMYK to RGB: (255 - C)(255 - K) / 255, rounded
    "CMYK": (lambda: Image.frombytes("CMYK", (5, 6), U8.tobytes()), 3,
             lambda: np.floor((255.0 - U8[..., :3]) * (255.0 - U8[..., 3:]) / 255 + 0.5)),
    # 16-bit: the high byte; 32-bit integers are taken as 16-bit; floats 0..1 scale to 0..255
    "I;16": (lambda: Image.fromarray(U16[..., 0]), 1, lambda: U16[..., :1] // 256),
    "I": (lambda: Image.fromarray(U16[..., 0].astype(np.int32)), 1, lambda: U16[..., :1] // 256),
    "F": (lambda: Image.fromarray(UNIT), 1, lambda: np.floor(UNIT[..., None] * 255.0 + 0.5)),
    "I;16 into RGB": (lambda: Image.fromarray(U16[..., 0]), 3, lambda: np.repeat(U16[..., :1] // 256, 3, axis=2)),
}


@pytest.mark.parametrize("mode", MODES)
def test_every_image_mode_is_converted_by_the_documented_rule(mode: str) -> None:
    make, channels, expected = MODES[mode]
    image = make()
    assert image.mode == mode.split()[0]
    out = fit_image(image, channels, 6, 5)
    assert out.dtype == torch.uint8
    np.testing.assert_array_equal(out.permute(1, 2, 0).numpy(), np.asarray(expected(), dtype=np.uint8))


@pytest.mark.parametrize("color_type, channels", [(0, 1), (2, 3), (4, 1), (6, 3)])
def test_16_bit_png_files_of_every_colour_type_keep_their_high_byte(color_type: int, channels: int,
                                                                      tmp_path: Path) -> None:
    """Grey, RGB, grey + alpha, RGBA: Pillow reduces the last three itself; nin does the same for grey."""
    samples = U16[..., :channels + (color_type >= 4)]
    path = png16(tmp_path / "image.png", samples[..., 0] if color_type == 0 else samples, color_type)
    np.testing.assert_array_equal(read_image(path, (channels, 6, 5)).permute(1, 2, 0).numpy(),
                                  (samples[..., :channels] // 256).astype(np.uint8))


def test_a_30_percent_grey_16_bit_png_is_predicted_like_its_8_bit_twin(checkpoint: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    """It used to reach the network as pure white."""
    deep = png16(tmp_path / "grey16.png", np.full((28, 28), round(0.3 * 65535), np.uint16), 0)
    flat = png(tmp_path / "grey8.png", np.full((28, 28), 76, np.uint8))  # 0.3 × 255 = 76.5: the high byte is 76
    assert (read_image(deep, (1, 28, 28)) == 76).all()
    answers = []
    for path in (deep, flat):
        assert main(["predict", str(checkpoint), str(path), "--json", "--top-k", "10"]) == 0
        answers.append(json.loads(capsys.readouterr().out)[0]["top_k"])
    assert answers[0] == answers[1]


@pytest.mark.parametrize("values, fragment", [(np.full((6, 5), 200.0), "float pixels range from 200 to 200"),
                                              (np.where(np.eye(6, 5) > 0, np.nan, 0.5), "from 0.5 to 0.5 with NaN"),
                                              (np.full((6, 5), 70000, np.int32), "32-bit pixels range from 70000")])
def test_pixels_outside_the_rule_are_refused_not_clipped(values: np.ndarray, fragment: str, tmp_path: Path) -> None:
    path = tmp_path / "image.tiff"
    Image.fromarray(values.astype(np.float32 if values.dtype.kind == "f" else np.int32)).save(path)
    with pytest.raises(ImageFileError, match=fragment) as err:
        read_image(path, (1, 6, 5))
    assert str(err.value).startswith(f"{path}: ")


def test_predict_names_a_folder_as_a_folder_and_exits_2_on_bad_images(checkpoint: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    good = png(tmp_path / "good.png", np.zeros((28, 28), np.uint8))
    (tmp_path / "bad.png").write_bytes(b"no image")
    assert main(["predict", str(checkpoint), good, str(tmp_path), str(tmp_path / "bad.png")]) == 2
    out, err = capsys.readouterr()
    assert out.startswith(good)
    assert f"{tmp_path}: a folder, not an image file" in err and "no such file" not in err
    assert f"{tmp_path / 'bad.png'}: not an image" in err


# ------------------------------------------------------------------------------------- filesystem faults


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator:
    """``small_fs(size)``: a tmpfs of that size (a real full disk), or a skip where mounting is not allowed."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        where = tmp_path / f"fs{len(mounted)}"
        where.mkdir()
        if os.geteuid() != 0 or not shutil.which("mount"):
            pytest.skip("mounting a small tmpfs needs root")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True,
                              text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


def read_only(where: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)


class _FullDevice(io.FileIO):
    """A file on a device (or under a quota) with 64 bytes left: a write that needs more fails, as do all later
    ones. Unbuffered, so that the error reaches the writing library as a real one does: torch's zip writer then
    writes its end records, finds itself at an unexpected position and raises `RuntimeError: ... unexpected pos`."""

    code = errno.ENOSPC
    left = 64

    def write(self, data: bytes) -> int:
        if len(data) > self.left:
            self.left = 0
            raise OSError(self.code, os.strerror(self.code))
        self.left -= len(data)
        return len(data)


def inject_fault(monkeypatch: pytest.MonkeyPatch, name: str, code: int, after: int = 0) -> dict[str, bytes]:
    """Make the writes of a file called ``name`` fail with ``code`` from the (after + 1)-th on: a full disk or quota
    (ENOSPC, EDQUOT) in mid-write, a read-only or forbidden folder (EROFS, EACCES) when the file is created.

    Returns a dict that receives the file's content as it was when the fault struck (b"" if it did not exist).
    """
    mkstemp, fdopen, doomed, kept = tempfile.mkstemp, os.fdopen, set(), {}
    writes = iter(range(-after, 1 << 30))  # the writes of ``name`` so far, counted from -after

    def faulty_mkstemp(*args, **kwargs):
        if kwargs.get("prefix") != f".{name}." or next(writes) < 0:
            return mkstemp(*args, **kwargs)
        target = Path(kwargs["dir"]) / name
        kept.setdefault("before", target.read_bytes() if target.exists() else b"")
        if code in (errno.EROFS, errno.EACCES):
            raise OSError(code, os.strerror(code), str(Path(kwargs["dir"]) / f"{kwargs['prefix']}XXXXXXXX.tmp"))
        fd, path = mkstemp(*args, **kwargs)
        doomed.add(fd)
        return fd, path

    def faulty_fdopen(fd: int, *args, **kwargs):
        if fd not in doomed:
            return fdopen(fd, *args, **kwargs)
        doomed.discard(fd)
        full = _FullDevice(fd, "wb")
        full.code = code
        return full

    monkeypatch.setattr(tempfile, "mkstemp", faulty_mkstemp)
    monkeypatch.setattr(os, "fdopen", faulty_fdopen)
    return kept


def test_a_full_disk_at_the_second_checkpoint_keeps_the_first(small_fs, shared_data: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    """Real: 5 MiB hold epoch 1's files (a 2.8 MB checkpoint) but not a second checkpoint beside them. torch's zip
    writer turns the ENOSPC into `RuntimeError: ... unexpected pos`; the error still says what happened."""
    out = small_fs("5m") / "run"
    fails(capsys, train(shared_data, out, "--epochs", "2"), f"cannot write {out / 'last.pt'}: no space left",
          "Nothing was half-written", "free some space or write elsewhere (--out)", "--resume")
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    assert [row["epoch"] for row in read_metrics(out / "metrics.jsonl")] == [1]
    assert files(out) == sorted(RUN_FILES[:4])  # no summary, no temporary file, no lock


def test_a_read_only_file_system_is_one_line_for_train_export_and_explain(small_fs, checkpoint: Path,
                                                                          shared_data: Path, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    where = small_fs("1m")
    (where / "explain").mkdir()
    (where / "explain" / "explain-000.png").write_bytes(b"old")
    read_only(where)
    fails(capsys, train(shared_data, where / "run"), str(where / "run"), "the file system is read-only",
          "write elsewhere (--out)")
    fails(capsys, ["export", str(checkpoint), "--format", "onnx", "--out", str(where / "model.onnx")],
          f"cannot write {where / 'model.onnx'}: the file system is read-only", "(--out)")
    image = png(tmp_path / "digit.png", np.zeros((28, 28), np.uint8))
    fails(capsys, ["explain", str(checkpoint), image, "--out", str(where / "explain")],
          f"cannot write {where / 'explain' / 'explain-000.png'}: the file system is read-only")
    assert files(where) == ["explain"] and (where / "explain" / "explain-000.png").read_bytes() == b"old"


@pytest.mark.parametrize("name, code, after, epoch", [
    ("last.pt", errno.EDQUOT, 0, 1),  # through torch's zip writer, which wraps the OSError in a RuntimeError
    ("metrics.jsonl", errno.ENOSPC, 1, 2),  # the first write, at start-up, repairs the records; the second fails
    ("curves.png", errno.EACCES, 1, 2),
    ("summary.json", errno.EROFS, 0, 2),
    ("recipe.toml", errno.EDQUOT, 0, 1),
])
def test_a_fault_at_any_write_of_a_run_is_one_line_and_keeps_the_last_checkpoint(
        name: str, code: int, after: int, epoch: int, run: Path, tmp_path: Path, shared_data: Path,
        capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    out = copy_run(run, tmp_path)
    kept = inject_fault(monkeypatch, name, code, after)
    fails(capsys, train(shared_data, out, "--epochs", "2", "--resume"), f"cannot write {out / name}: {MEANING[code]}",
          "Nothing was half-written", "--resume")
    assert (out / name).read_bytes() == kept["before"]
    assert load_checkpoint(out / "last.pt")["epoch"] == epoch
    assert files(out) == sorted(RUN_FILES)  # no temporary file, no lock


@pytest.mark.parametrize("command, name, code", [
    (["export", "--format", "onnx"], "model.onnx", errno.ENOSPC),
    (["export", "--format", "torchscript"], "model.torchscript.pt", errno.EDQUOT),
    (["export", "--format", "safetensors"], "model.safetensors", errno.EROFS),
    (["export", "--format", "safetensors"], "model.json", errno.EACCES),  # the sidecar: the weights stay old too
    (["explain"], "explain-000.png", errno.ENOSPC),  # EROFS: test_a_read_only_file_system_is_one_line_...
    (["explain"], "explain-000.png", errno.EACCES),
])
def test_a_fault_while_exporting_or_explaining_is_one_line_and_keeps_the_old_files(
        command: list[str], name: str, code: int, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    out.mkdir()
    old = {n: f"old {n}".encode() for n in ([name, "model.safetensors"] if name == "model.json" else [name])}
    for n, data in old.items():
        (out / n).write_bytes(data)
    if command[0] == "export":
        target = out / ("model.safetensors" if name == "model.json" else name)
        argv = [command[0], str(checkpoint), *command[1:], "--out", str(target)]
    else:
        argv = ["explain", str(checkpoint), png(tmp_path / "digit.png", np.zeros((28, 28), np.uint8)),
                "--out", str(out)]
    inject_fault(monkeypatch, name, code)
    fails(capsys, argv, f"cannot write {out / name}: {MEANING[code]}", "Nothing was half-written", "(--out)")
    assert contents(out) == old


def test_a_checkpoint_that_cannot_be_read_is_not_called_damaged(checkpoint: Path, capsys: pytest.CaptureFixture,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A permission denied (injected: root reads every file) used to read "truncated ...; delete it"."""
    def denied(path: object, *args: object, **kwargs: object) -> io.IOBase:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(nin.checkpoint, "open", denied, raising=False)
    line = fails(capsys, ["eval", str(checkpoint)], f"cannot read checkpoint {checkpoint}: Permission denied",
                 "check its permissions")
    assert "delete" not in line and "truncated" not in line


# ------------------------------------------------------------------------------ non-finite weights and outputs


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Checkpoints with one NaN weight, one infinite preprocessing statistic, and a weights file with a NaN."""
    folder = tmp_path_factory.mktemp("poisoned")
    state = checkpoint_state(synthetic_digits(64)[0], ("mean_image",))
    paths = {}
    for what, key, value in [("weight", "model", float("nan")), ("statistic", "preprocess", float("inf"))]:
        bad = copy.deepcopy(state)
        tensor = bad["model"]["features.0.layers.0.weight"] if key == "model" else bad["preprocess"]["steps"][0]["mean"]
        tensor.view(-1)[3] = value
        paths[what] = folder / f"{what}.pt"
        save_checkpoint(paths[what], bad)
    good = folder / "good.pt"
    save_checkpoint(good, state)
    assert main(["export", str(good), "--format", "safetensors", "--out", str(folder / "w.safetensors")]) == 0
    tensors = load_file(folder / "w.safetensors")
    tensors["model.features.0.layers.0.weight"].view(-1)[3] = float("nan")
    save_file(tensors, folder / "w.safetensors")
    paths["weights file"] = folder / "w.safetensors"
    return paths


@pytest.mark.parametrize("what, named", [("weight", "NaN in model.features.0.layers.0.weight"),
                                         ("statistic", "Inf in preprocess.steps.0.mean"),
                                         ("weights file", "NaN in model.features.0.layers.0.weight")])
def test_non_finite_weights_or_statistics_are_refused_by_every_command(what: str, named: str,
                                                                       poisoned: dict[str, Path], tmp_path: Path,
                                                                       shared_data: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    """They used to be scored ("90.20%"), predicted (a bare NaN in --json) and exported."""
    path = str(poisoned[what])
    image = png(tmp_path / "digit.png", np.zeros((28, 28), np.uint8))
    commands = [["eval", path, "--data-dir", str(shared_data)], ["predict", path, image, "--json"],
                ["explain", path, image, "--out", str(tmp_path / "explain")]]
    if what != "weights file":
        commands += [["export", path, "--format", fmt, "--out", str(tmp_path / f"model.{fmt}")]
                     for fmt in ("onnx", "safetensors")]
    for argv in commands:
        fails(capsys, argv, path, named, "every result would be meaningless")
    assert files(tmp_path) == ["digit.png"]
    if what != "weights file":
        out = tmp_path / "run"
        out.mkdir()
        shutil.copyfile(path, out / "last.pt")
        fails(capsys, train(shared_data, out, "--resume"), named)


def test_predict_json_stays_valid_when_the_network_overflows(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Finite weights 1e15 times too large: the logits overflow to Inf and the softmax is NaN."""
    state = checkpoint_state(synthetic_digits(8)[0])
    for tensor in state["model"].values():
        tensor.mul_(1e15)
    save_checkpoint(tmp_path / "loud.pt", state)
    image = png(tmp_path / "digit.png", synthetic_digits(1, seed=3)[0][0, 0].numpy())
    assert main(["predict", str(tmp_path / "loud.pt"), image, "--json"]) == 2
    out, err = capsys.readouterr()

    def strict(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    assert json.loads(out, parse_constant=strict) == []
    assert f"{image}: the network's output for this image is not a number" in err


# ----------------------------------------------------------------------------------------- recipe values


@pytest.mark.parametrize("options, message", [
    (["--set", "lr=-0.1"], "--set lr=-0.1: lr must be positive"),
    (["--set", "lr=nan"], "--set lr=nan: lr is NaN; give a finite number"),
    (["--set", "weight_decay=-1e-4"], "weight_decay must be at least 0"),
    (["--set", "momentum=5"], "--set momentum=5: momentum must be at least 0 and below 1"),
    (["--set", "momentum=1.0"], "momentum must be at least 0 and below 1"),
    (["--set", "label_smoothing=2"], "label_smoothing must be a probability, from 0 to 1, got 2"),
    (["--set", "model_args.dropout=1.5"], "dropout probability has to be between 0 and 1"),
    (["--set", "model_args.dropout=nan"], "model_args.dropout is NaN"),
    (["--set", "gamma=0"], "gamma must be positive"),
    (["--set", "milestones=[30, 10]"], "milestones must be increasing epoch numbers"),
    (["--seed", "-1"], "--seed -1: seed must be at least 0, got -1"),
    (["--epochs", "0"], "--epochs 0: epochs must be at least 1"),
    (["--max-minutes", "inf"], "--max-minutes inf: max_minutes is Inf; give a finite number"),
])
def test_recipe_values_are_checked_by_range_before_any_work(options: list[str], message: str, tmp_path: Path,
                                                            shared_data: Path, capsys: pytest.CaptureFixture) -> None:
    """`seed=-1`, `lr=-0.1` and `label_smoothing=2` used to end in tracebacks (the last after training started),
    `momentum=5` was accepted, and `lr=nan` was reported as "the loss diverged"."""
    fails(capsys, train(shared_data, tmp_path / "run", *options), message)
    assert not (tmp_path / "run").exists()


# -------------------------------------------------------------------------------- what a checkpoint claims


@pytest.mark.parametrize("key, value, command, message", [
    ("input_size", [2, 28, 28], "predict", "gives the input size 2×28×28, which its network NIN does not accept"),
    ("input_size", [1, 2, 2], "predict", "gives the input size 1×2×2, which its network NIN does not accept"),
    ("input_size", "abc", "eval", "gives the input size 'abc'; it must be [channels, height, width]"),
    ("dataset", "imagenet", "eval", "trained on 'imagenet', which is not a dataset nin can load"),
    ("dataset", 5, "predict", "damaged metadata"),
    ("classes", "0123456789", "predict", "damaged metadata"),
])
def test_forged_metadata_in_a_checkpoint_is_one_clear_error(key: str, value: object, command: str, message: str,
                                                           tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    state = checkpoint_state(synthetic_digits(8)[0])
    state[key] = value
    save_checkpoint(tmp_path / "forged.pt", state)
    image = png(tmp_path / "digit.png", np.zeros((28, 28), np.uint8))
    fails(capsys, [command, str(tmp_path / "forged.pt"), *([image] if command == "predict" else [])], message)


def test_a_plain_state_dict_gets_a_hint_that_works(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch.manual_seed(1)
    model = create_model("nin_mnist", **MODEL_ARGS).eval()
    for name, saved in [("bare.pt", model.state_dict()), ("wrapped.pt", {"state_dict": model.state_dict(),
                                                                          "epoch": 3})]:
        torch.save(saved, tmp_path / name)
        fails(capsys, ["eval", str(tmp_path / name)], "not a nin checkpoint",
              "a bare state_dict of" if name == "bare.pt" else "a state_dict under the key 'state_dict'",
              "nin.inference.weights.weights_from_state_dict")
    # the hint: wrap it; pixels / 255 in front, as the default preprocessing says
    weights_from_state_dict(model.state_dict(), "nin_mnist", tmp_path / "own.safetensors", model_args=MODEL_ARGS)
    images = synthetic_digits(4, seed=2)[0]
    with torch.no_grad():
        expected = model(images.float() / 255)
    torch.testing.assert_close(load_weights(tmp_path / "own.safetensors").logits(images), expected)
    with pytest.raises(WeightsError, match="does not fit nin_cifar10"):
        weights_from_state_dict(model.state_dict(), "nin_cifar10", tmp_path / "other.safetensors")
