"""The lossless packing that carries CIFAR-10 to a lent GPU: rebuilt batches equal the originals."""
from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("device_data", REPO / "benchmarks" / "device" / "data.py")
device_data = importlib.util.module_from_spec(spec)
spec.loader.exec_module(device_data)


def _batch(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    smooth = np.cumsum(rng.integers(-9, 10, size=(n, 3072)), axis=1) % 256  # image-like and wrapping
    return {b"batch_label": b"training batch 1 of 5", b"labels": rng.integers(0, 10, n).tolist(),
            b"data": smooth.astype(np.uint8), b"filenames": [f"train_{i:05d}.png".encode() for i in range(n)]}


def test_pack_then_unpack_gives_back_every_pixel_label_and_field(tmp_path: Path) -> None:
    original = _batch(20, 0)
    source = tmp_path / "data_batch_1"
    source.write_bytes(pickle.dumps(original, protocol=2))
    packed, fingerprint = device_data.pack_batch(source)
    rebuilt = device_data.unpack_batch(packed)
    assert np.array_equal(rebuilt[b"data"], original[b"data"])
    assert rebuilt[b"labels"] == original[b"labels"]
    assert rebuilt[b"filenames"] == original[b"filenames"] and rebuilt[b"batch_label"] == original[b"batch_label"]
    assert device_data._fingerprint(rebuilt) == fingerprint


def test_unpack_refuses_a_batch_that_does_not_match_its_fingerprint(tmp_path: Path) -> None:
    piece = tmp_path / "a"
    (piece / device_data.TRAIN_DIR).mkdir(parents=True)
    source = tmp_path / "data_batch_1"
    source.write_bytes(pickle.dumps(_batch(5, 1), protocol=2))
    packed, _ = device_data.pack_batch(source)
    (piece / device_data.TRAIN_DIR / "data_batch_1.xz").write_bytes(packed)
    (piece / "fingerprints.json").write_text(f'{{"{device_data.TRAIN_DIR}/data_batch_1": "0"}}')
    with pytest.raises(SystemExit, match="differ from the original"):
        device_data.unpack(piece, tmp_path / "root")
    assert not list((tmp_path / "root").rglob("data_batch_1*"))
