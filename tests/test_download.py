"""Downloads without the network: files are served from 127.0.0.1 in a thread, or from file:// URLs."""
from __future__ import annotations

import functools
import hashlib
import http.server
import io
import pickle
import socket
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from nin.cli import main
from nin.data import DatasetError, load_dataset
from nin.data import download as dl

README_MD5 = {  # the .gz md5s published in the shared data README (= the official files)
    "mnist": ["f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
              "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"],
    "fashion-mnist": ["8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
                      "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"],
}
IDX_NAMES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz"]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


class _ShortBodyHandler(_QuietHandler):
    """Announces 1,000 bytes and sends 10: a connection cut mid-transfer."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"0123456789")


def _serve(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, folder it serves) of an HTTP server on 127.0.0.1."""
    folder = tmp_path / "served"
    folder.mkdir()
    yield from ((url, folder) for url in _serve(functools.partial(_QuietHandler, directory=str(folder))))


@pytest.fixture
def dead_url() -> str:
    """A 127.0.0.1 URL nobody listens on (connection refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_shared_files_pass_the_published_checksums(shared_path, name):
    folder = shared_path(name)
    assert [dl.CHECKSUMS[name][f] for f in IDX_NAMES] == README_MD5[name]
    for f in IDX_NAMES:
        assert dl.md5sum(folder / f) == dl.CHECKSUMS[name][f], f


def test_download_mnist_test_from_a_local_mirror(shared_path, served, dead_url, tmp_path, monkeypatch):
    url, folder = served
    for f in IDX_NAMES[2:]:
        (folder / f).write_bytes(shared_path("mnist", f).read_bytes())
    monkeypatch.setitem(dl.MIRRORS, "mnist", [dead_url, url])  # the first mirror is down
    root = tmp_path / "root"
    x, y, _ = load_dataset("mnist", "test", root=root, download=True)
    assert x.shape == (10_000, 1, 28, 28) and y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert sorted(p.name for p in (root / "mnist").iterdir()) == sorted(IDX_NAMES[2:])  # only what test needs
    # Present and matching: no network needed the second time.
    monkeypatch.setitem(dl.MIRRORS, "mnist", [dead_url])
    assert len(load_dataset("mnist", "test", root=root, download=True)) == 10_000


def test_checksum_mismatch_keeps_nothing(served, tmp_path):
    url, folder = served
    (folder / "file.bin").write_bytes(b"not the official bytes")
    dest = tmp_path / "out" / "file.bin"
    expected = "0" * 32
    with pytest.raises(DatasetError) as err:
        dl.download_file([url + "file.bin"], dest, expected, progress=False)
    msg = str(err.value)
    assert "file.bin" in msg and expected in msg and url + "file.bin" in msg and str(dest) in msg
    assert md5(b"not the official bytes") in msg
    assert not dest.exists() and leftovers(dest.parent) == []


def test_offline_error_lists_every_url_and_where_to_put_the_file(dead_url, tmp_path, monkeypatch):
    monkeypatch.setitem(dl.MIRRORS, "svhn", [dead_url, dead_url + "mirror/"])
    with pytest.raises(DatasetError) as err:
        load_dataset("svhn", "test", root=tmp_path, download=True)
    msg = str(err.value)
    assert dl.CHECKSUMS["svhn"]["test_32x32.mat"] in msg
    assert f"{dead_url}test_32x32.mat" in msg and f"{dead_url}mirror/test_32x32.mat" in msg
    assert str(tmp_path / "svhn" / "test_32x32.mat") in msg and "offline" in msg
    assert leftovers(tmp_path / "svhn") == []


def test_truncated_transfer_is_rejected(tmp_path):
    dest = tmp_path / "f.bin"
    for url in _serve(_ShortBodyHandler):
        with pytest.raises(DatasetError, match="stopped after 10 of 1,000 bytes"):
            dl.download_file([url + "f.bin"], dest, md5(b"0123456789"), progress=False)
    assert not dest.exists() and leftovers(tmp_path) == []


def test_existing_file_is_kept_or_replaced_by_checksum(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(b"official")
    dest = tmp_path / "dest" / "file.bin"
    dest.parent.mkdir()
    dest.write_bytes(b"official")
    assert dl.download_file([], dest, md5(b"official"), progress=False) == dest  # no URL needed
    dest.write_bytes(b"stale or truncated")
    dl.download_file([source.as_uri()], dest, md5(b"official"), progress=False)  # file:// URL
    assert dest.read_bytes() == b"official" and leftovers(dest.parent) == []


# ------------------------------------------------------------------------------------ tar extraction

def _tar(path: Path, members: list[tarfile.TarInfo]) -> Path:
    with tarfile.open(path, "w:gz") as t:
        for info in members:
            t.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return path


def _file(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 1
    return info


def _link(name: str, target: str, hard: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    return info


@pytest.mark.parametrize("bad, expected", [
    (_file("/etc/evil"), "absolute path"),
    (_file("data/../../evil"), "climbs out"),
    (_link("data/link", "../../outside"), "outside the archive"),
    (_link("data/link", "/etc/passwd"), "outside the archive"),
    (_link("data/hard", "../x", hard=True), "outside the archive"),
])
def test_unsafe_archives_are_refused_before_writing(tmp_path, bad, expected):
    archive = _tar(tmp_path / "a.tar.gz", [_file("data/ok"), bad])
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(DatasetError, match=expected) as err:
        dl.extract_tar(archive, dest)
    assert str(archive) in str(err.value)
    assert list(dest.iterdir()) == [] and not (tmp_path / "evil").exists()


def test_safe_archive_extracts_and_never_overwrites(tmp_path):
    archive = _tar(tmp_path / "a.tar.gz", [_file("data/ok"), _link("data/alias", "ok")])
    dest = tmp_path / "dest"
    dest.mkdir()
    dl.extract_tar(archive, dest)
    assert (dest / "data" / "ok").read_bytes() == b"x" and (dest / "data" / "alias").is_symlink()
    assert [p.name for p in dest.iterdir()] == ["data"]  # no temporary folder left behind
    with pytest.raises(DatasetError, match="would overwrite"):
        dl.extract_tar(archive, dest)


# ------------------------------------------------------------------------ end to end: CIFAR and SVHN

def _tiny_cifar10_archive(path: Path) -> tuple[np.ndarray, list[int]]:
    x = np.random.default_rng(5).integers(0, 256, (4, 3072), dtype=np.uint8)
    labels = [3, 1, 4, 1]
    blobs = {f"data_batch_{k}": {b"data": x, b"labels": labels} for k in range(1, 6)}
    blobs["test_batch"] = {b"data": x, b"labels": labels}
    with tarfile.open(path, "w:gz") as t:
        for name, d in blobs.items():
            data = pickle.dumps(d, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return x, labels


def test_download_cifar10_fetches_checks_and_extracts(served, tmp_path, monkeypatch):
    url, folder = served
    x, labels = _tiny_cifar10_archive(folder / "cifar-10-python.tar.gz")
    monkeypatch.setitem(dl.MIRRORS, "cifar10", [url])
    monkeypatch.setitem(dl.CHECKSUMS, "cifar10",
                        {"cifar-10-python.tar.gz": dl.md5sum(folder / "cifar-10-python.tar.gz")})
    root = tmp_path / "root"
    test = load_dataset("cifar10", "test", root=root, download=True)
    assert np.array_equal(test.images.numpy(), x.reshape(-1, 3, 32, 32)) and test.labels.tolist() == labels
    assert (root / "cifar-10-batches-py" / "test_batch").is_file() and (root / "cifar-10-python.tar.gz").is_file()
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]
    assert len(load_dataset("cifar10", "train", root=root)) == 16


def test_download_svhn_test_via_file_url(tmp_path, monkeypatch):
    scipy_io = pytest.importorskip("scipy.io")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    x = np.random.default_rng(6).integers(0, 256, (32, 32, 3, 3), dtype=np.uint8)
    scipy_io.savemat(mirror / "test_32x32.mat", {"X": x, "y": np.array([[10], [3], [7]], np.uint8)})
    monkeypatch.setitem(dl.MIRRORS, "svhn", [mirror.as_uri() + "/"])
    monkeypatch.setitem(dl.CHECKSUMS, "svhn", {**dl.CHECKSUMS["svhn"],
                                               "test_32x32.mat": dl.md5sum(mirror / "test_32x32.mat")})
    test = load_dataset("svhn", "test", root=tmp_path / "root", download=True)
    assert test.labels.tolist() == [0, 3, 7]
    assert torch.equal(test.images, torch.from_numpy(x.transpose(3, 2, 0, 1).copy()))


# ------------------------------------------------------------------------------------ nin data download

def test_cli_download_fetches_verifies_and_then_needs_no_network(shared_path, served, dead_url, tmp_path,
                                                                  monkeypatch, capsys):
    url, folder = served
    for f in IDX_NAMES:
        (folder / f).write_bytes(shared_path("mnist", f).read_bytes())
    monkeypatch.setitem(dl.MIRRORS, "mnist", [url])
    root = tmp_path / "root"
    assert main(["data", "download", "mnist", "--data-dir", str(root)]) == 0
    assert capsys.readouterr().out.split() == [str(root / "mnist" / f) for f in IDX_NAMES]
    assert [dl.md5sum(root / "mnist" / f) for f in IDX_NAMES] == README_MD5["mnist"]
    monkeypatch.setitem(dl.MIRRORS, "mnist", [dead_url])  # all there and verified: no network needed
    assert main(["data", "download", "mnist", "--data-dir", str(root)]) == 0
    assert len(load_dataset("mnist", "valid", root=root)) == 10_000


def test_cli_download_offline_is_one_line_naming_the_url_the_file_and_where(dead_url, tmp_path, monkeypatch,
                                                                            capsys):
    monkeypatch.setitem(dl.MIRRORS, "fashion-mnist", [dead_url])
    assert main(["data", "download", "fashion-mnist", "--data-dir", str(tmp_path)]) == 2
    *progress, err = capsys.readouterr().err.splitlines()  # the error is the last line, and one line
    first = "train-images-idx3-ubyte.gz"
    assert progress[0].startswith("fashion-mnist: fetching") and err.startswith("nin data: error: could not download")
    assert f"download {dead_url}{first} on one with internet" in err
    assert err.endswith(f"put it at {tmp_path / 'fashion-mnist' / first}, then run the command again.")
    assert dl.CHECKSUMS["fashion-mnist"][first] in err and "load_dataset" not in err


def test_cli_download_extracts_cifar(served, tmp_path, monkeypatch, capsys):
    url, folder = served
    _, labels = _tiny_cifar10_archive(folder / "cifar-10-python.tar.gz")
    monkeypatch.setitem(dl.MIRRORS, "cifar10", [url])
    monkeypatch.setitem(dl.CHECKSUMS, "cifar10",
                        {"cifar-10-python.tar.gz": dl.md5sum(folder / "cifar-10-python.tar.gz")})
    assert main(["data", "download", "cifar10", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "cifar-10-batches-py")]
    assert load_dataset("cifar10", "test", root=tmp_path).labels.tolist() == labels
