"""Carry the CIFAR-10 copies of ``../shared/data`` to a lent GPU machine in three pieces of < 42 MiB.

The device tool sends at most 64 MiB per call, and the CIFAR-10 files are 185 MB. Each pickle batch is
stored as the residual of the gradient predictor (left + up - up-left, mod 256, per channel) packed
with xz: lossless, 66% of the raw size for the training batches. A warm machine keeps files between
calls, so piece ``a`` goes with the first call, ``b`` with the second and ``c`` with the third::

    python benchmarks/device/data.py pack ../shared/data .devdata      # here: .devdata/a, b and c
    python benchmarks/device/data.py unpack .devdata/a ../shared/data  # there, once per piece

``unpack`` checks every rebuilt batch against a SHA-256 of its pixels and labels taken from the
originals, and stops on a mismatch.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np

TRAIN_DIR = "cifar-10-lossless-train-batches-py"
TEST_DIR = "cifar-10-jpeg75-batches-py"
SUBSET = Path("cifar-10-lossless-subset") / "test_1000.npz"
PIECES = {  # three of < 42 MiB: a call carries the repository's tracked files (about 23 MiB) too
    "a": [f"{TRAIN_DIR}/data_batch_{i}" for i in (1, 2)] + [f"{TRAIN_DIR}/batches.meta", f"{TEST_DIR}/batches.meta"],
    "b": [f"{TRAIN_DIR}/data_batch_{i}" for i in (3, 4)],
    "c": [f"{TRAIN_DIR}/data_batch_5", f"{TEST_DIR}/test_batch", str(SUBSET)],
}


def _fingerprint(batch: dict) -> str:
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    return hashlib.sha256(np.ascontiguousarray(batch[b"data"]).tobytes() + labels.tobytes()).hexdigest()


def _predicted(x: np.ndarray) -> np.ndarray:
    """left + up - up-left for every pixel of (N, C, H, W) int64 images, zeros outside."""
    a = np.pad(x, ((0, 0), (0, 0), (1, 0), (1, 0)))
    return a[:, :, 1:, :-1] + a[:, :, :-1, 1:] - a[:, :, :-1, :-1]


def pack_batch(source: Path) -> tuple[bytes, str]:
    batch = pickle.loads(source.read_bytes(), encoding="bytes")
    x = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).astype(np.int64)
    residual = ((x - _predicted(x)) % 256).astype(np.uint8)
    rest = {k: v for k, v in batch.items() if k not in (b"data", b"labels")}
    blob = pickle.dumps({"n": len(x), "labels": np.asarray(batch[b"labels"], np.uint8).tobytes(), "rest": rest,
                         "residual": residual.tobytes()})
    return lzma.compress(blob, preset=6), _fingerprint(batch)


def unpack_batch(packed: bytes) -> dict:
    p = pickle.loads(lzma.decompress(packed))
    r = np.frombuffer(p["residual"], np.uint8).reshape(p["n"], 3, 32, 32).astype(np.int64)
    x = np.zeros((p["n"], 3, 33, 33), np.int64)  # one row and column of zeros in front
    for i in range(32):  # each pixel needs its left and upper neighbours rebuilt first
        for j in range(32):
            x[:, :, i + 1, j + 1] = (r[:, :, i, j] + x[:, :, i + 1, j] + x[:, :, i, j + 1] - x[:, :, i, j]) % 256
    batch = dict(p["rest"])
    batch[b"data"] = x[:, :, 1:, 1:].astype(np.uint8).reshape(p["n"], 3072)
    batch[b"labels"] = np.frombuffer(p["labels"], np.uint8).astype(int).tolist()
    return batch


def pack(root: Path, out: Path) -> None:
    for piece, names in PIECES.items():
        fingerprints = {}
        for name in names:
            target = out / piece / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if name.endswith(("batches.meta", ".npz")):
                shutil.copyfile(root / name, target)
                continue
            packed, fingerprints[name] = pack_batch(root / name)
            target.with_suffix(".xz").write_bytes(packed)
        (out / piece / "fingerprints.json").write_text(json.dumps(fingerprints, indent=1))
        size = sum(f.stat().st_size for f in (out / piece).rglob("*") if f.is_file())
        print(f"{out / piece}: {size / 2**20:.1f} MiB")


def unpack(piece: Path, root: Path) -> None:
    fingerprints = json.loads((piece / "fingerprints.json").read_text())
    for file in sorted(p for p in piece.rglob("*") if p.is_file() and p.name != "fingerprints.json"):
        name = str(file.relative_to(piece))
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if file.suffix != ".xz":
            shutil.copyfile(file, target)
            continue
        name = name[: -len(".xz")]
        batch = unpack_batch(file.read_bytes())
        if _fingerprint(batch) != fingerprints[name]:
            sys.exit(f"{file}: the rebuilt pixels or labels differ from the original {name}; pack it again")
        tmp = target.with_name(target.name[: -len(".xz")] + ".partial")
        tmp.write_bytes(pickle.dumps(batch, protocol=2))
        tmp.rename(target.with_suffix(""))
        print(f"{name}: rebuilt, pixels and labels match the original")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack")
    p.add_argument("data_root", type=Path)
    p.add_argument("out", type=Path)
    u = sub.add_parser("unpack")
    u.add_argument("piece", type=Path)
    u.add_argument("data_root", type=Path)
    args = parser.parse_args()
    pack(args.data_root, args.out) if args.command == "pack" else unpack(args.piece, args.data_root)


if __name__ == "__main__":
    main()
