"""MNIST from its standard IDX files, gzipped or raw, with clear errors.

The four files of the data set (LeCun, Cortes, Burges) are looked up in a directory::

    train-images-idx3-ubyte   train-labels-idx1-ubyte     60,000 training images / labels
    t10k-images-idx3-ubyte    t10k-labels-idx1-ubyte      10,000 test images / labels

each either raw or gzipped (the same name plus ``.gz``); the variant with a dot
(``train-images.idx3-ubyte``) and torchvision's layout (``<dir>/MNIST/raw/``) are
accepted too.

The IDX format: a big-endian header, then the data in C order.

* bytes 0-3, the magic number: two zero bytes, the element type (``0x08``: unsigned
  byte) and the number of dimensions. MNIST images: ``0x00000803`` = 2051 (ubyte,
  3 dimensions); labels: ``0x00000801`` = 2049 (ubyte, 1 dimension).
* one unsigned 32-bit big-endian integer per dimension: images ``N, rows, cols``
  (``N, 28, 28``), labels ``N``.
* ``prod(dims)`` elements: pixels 0 (background) to 255 (ink), labels 0 to 9.

:func:`load_mnist` returns the raw arrays as tensors, :func:`mnist_tensors` the
normalized float inputs of a classifier, and :func:`download_mnist` fetches the
files into a cache directory on a machine that is online (it is never called
implicitly: loading only reads files that are already there).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zlib
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "MNIST_FILES",
    "MNIST_MEAN",
    "MNIST_STD",
    "MNIST_MIRRORS",
    "MNISTNotFoundError",
    "MNISTFormatError",
    "MNISTDownloadError",
    "load_mnist",
    "mnist_tensors",
    "download_mnist",
    "read_idx",
]

#: (images, labels) file names of each split, without ``.gz``.
MNIST_FILES: Dict[str, Tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
#: Mean and standard deviation of the training pixels scaled to [0, 1].
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
#: Public mirrors tried in turn by :func:`download_mnist` (each serves the ``.gz`` files).
MNIST_MIRRORS: Tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
#: md5 of the uncompressed files (mirrors may recompress, the content is the same).
MNIST_MD5: Dict[str, str] = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049

#: IDX element type code -> numpy dtype (big-endian).
_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_HINT = (
    "Put the four standard MNIST files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
    "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, raw or .gz) in one directory and pass it, "
    "or fetch them on a machine that is online with neuralode.data.download_mnist(cache_dir)."
)


class MNISTNotFoundError(FileNotFoundError):
    """The data directory or one of its MNIST files does not exist."""


class MNISTFormatError(ValueError):
    """An MNIST file is not a valid IDX file of the expected kind (bad magic number,
    truncated, trailing bytes, corrupt gzip stream, counts that do not match)."""


class MNISTDownloadError(OSError):
    """:func:`download_mnist` could not fetch a file from any mirror (e.g. offline)."""


# --------------------------------------------------------------------------- reading


def _candidates(data_dir: str, name: str) -> List[str]:
    """Paths tried for one file, in order: raw and .gz, ``-idx`` and ``.idx`` spellings,
    in ``data_dir`` and in torchvision's ``data_dir/MNIST/raw``."""
    dotted = name.replace("-idx", ".idx")
    out = []
    for folder in (data_dir, os.path.join(data_dir, "MNIST", "raw")):
        for base in (name, dotted):
            for suffix in ("", ".gz"):
                path = os.path.join(folder, base + suffix)
                if path not in out:
                    out.append(path)
    return out


def _find(data_dir: str, name: str) -> str:
    tried = _candidates(data_dir, name)
    for path in tried:
        if os.path.isfile(path):
            return path
    raise MNISTNotFoundError(
        f"MNIST file {name!r} (raw or .gz) not found in {data_dir!r}; looked for: "
        + ", ".join(os.path.relpath(p, data_dir) for p in tried)
        + f". {_HINT}"
    )


def _read_bytes(path: str) -> bytes:
    """The file's content, gunzipped when it is gzipped (by its magic bytes, not its name)."""
    with open(path, "rb") as fh:
        head = fh.read(2)
    if head == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as fh:
                return fh.read()
        except (OSError, EOFError, zlib.error) as err:
            raise MNISTFormatError(
                f"{path}: corrupt or truncated gzip stream ({type(err).__name__}: {err}); "
                "delete the file and fetch it again"
            ) from err
    if path.endswith(".gz"):
        raise MNISTFormatError(f"{path}: named .gz but not gzipped (first bytes {head!r}); delete it and fetch it again")
    with open(path, "rb") as fh:
        return fh.read()


def read_idx(path: str, expected_magic: Optional[int] = None) -> np.ndarray:
    """Parses one IDX file (raw or gzipped) into a numpy array of its dimensions.

    ``expected_magic``: 2051 for MNIST images, 2049 for labels; another magic number
    raises :class:`MNISTFormatError`, as do a truncated header or body and trailing bytes.
    """
    data = _read_bytes(path)
    if len(data) < 4:
        raise MNISTFormatError(
            f"{path}: {len(data)} bytes, too short for an IDX header; the file is truncated: delete it and fetch it again"
        )
    magic = int.from_bytes(data[:4], "big")
    zeros, type_code, ndim = data[0:2], data[2], data[3]
    if expected_magic is not None and magic != expected_magic:
        kind = {IMAGES_MAGIC: "an IDX image file", LABELS_MAGIC: "an IDX label file"}.get(expected_magic, "IDX")
        raise MNISTFormatError(
            f"{path}: bad magic number {magic} (0x{magic:08x}), expected {expected_magic} "
            f"(0x{expected_magic:08x}) for {kind}; the file is corrupt or not the MNIST file of that name"
        )
    if zeros != b"\x00\x00" or type_code not in _IDX_TYPES or ndim == 0:
        raise MNISTFormatError(f"{path}: bad magic number {magic} (0x{magic:08x}); not an IDX file")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise MNISTFormatError(f"{path}: truncated IDX header ({len(data)} of {header} bytes); delete the file and fetch it again")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_TYPES[type_code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    body = len(data) - header
    if body < expected:
        raise MNISTFormatError(
            f"{path}: truncated data: the header announces dims {dims} ({expected} bytes) but only "
            f"{body} bytes follow; delete the file and fetch it again"
        )
    if body > expected:
        raise MNISTFormatError(
            f"{path}: {body - expected} unexpected bytes after the {expected} bytes of dims {dims}; the file is corrupt"
        )
    arr = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=header)
    return arr.reshape(dims).astype(dtype.newbyteorder("="), copy=True)


def load_mnist(data_dir: str, train: bool = True) -> Tuple[Tensor, Tensor]:
    """One split of MNIST from the IDX files in ``data_dir``.

    Args:
        data_dir: directory holding ``train-images-idx3-ubyte``,
            ``train-labels-idx1-ubyte`` (``train=True``) or ``t10k-images-idx3-ubyte``,
            ``t10k-labels-idx1-ubyte`` (``train=False``), each raw or ``.gz``.
        train: the 60,000 training images, else the 10,000 test images.

    Returns:
        ``(images, labels)``: ``uint8`` tensor ``(N, 28, 28)`` of pixels 0-255 and
        ``int64`` tensor ``(N,)`` of digits 0-9.

    Raises:
        MNISTNotFoundError (a ``FileNotFoundError``): the directory or a file is
            missing; the message lists the paths looked for.
        MNISTFormatError (a ``ValueError``): bad magic number, truncated or corrupt
            file, wrong dimensions, labels outside 0-9, or image and label counts
            that differ.
    """
    data_dir = os.fspath(data_dir)
    if not os.path.isdir(data_dir):
        raise MNISTNotFoundError(f"MNIST directory {data_dir!r} does not exist or is not a directory. {_HINT}")
    image_name, label_name = MNIST_FILES["train" if train else "test"]
    image_path, label_path = _find(data_dir, image_name), _find(data_dir, label_name)

    images = read_idx(image_path, IMAGES_MAGIC)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise MNISTFormatError(
            f"{image_path}: expected unsigned-byte images of dims (N, rows, cols), got {images.dtype} of dims {images.shape}"
        )
    labels = read_idx(label_path, LABELS_MAGIC)
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise MNISTFormatError(f"{label_path}: expected unsigned-byte labels of dims (N,), got {labels.dtype} {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise MNISTFormatError(
            f"image/label count mismatch: {image_path} has {images.shape[0]} images but {label_path} has "
            f"{labels.shape[0]} labels; the two files are not from the same split or one is corrupt"
        )
    if labels.size and int(labels.max()) > 9:
        raise MNISTFormatError(f"{label_path}: label {int(labels.max())} outside 0-9; the file is corrupt")
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def mnist_tensors(data_dir: str, train: bool = True, normalize: bool = True) -> Tuple[Tensor, Tensor]:
    """MNIST as classifier inputs: ``float32 (N, 1, 28, 28)`` and ``int64 (N,)`` labels.

    Pixels are scaled to [0, 1] and, with ``normalize``, standardized with the
    training set's mean 0.1307 and standard deviation 0.3081. Errors as :func:`load_mnist`.
    """
    images, labels = load_mnist(data_dir, train)
    x = images.unsqueeze(1).to(torch.float32).div_(255.0)
    if normalize:
        x.sub_(MNIST_MEAN).div_(MNIST_STD)
    return x, labels


# --------------------------------------------------------------------------- download


def _md5_uncompressed(path: str) -> str:
    return hashlib.md5(_read_bytes(path)).hexdigest()


def _valid(path: str, name: str) -> bool:
    try:
        return _md5_uncompressed(path) == MNIST_MD5[name]
    except (OSError, ValueError):
        return False


def download_mnist(
    cache_dir: str,
    mirrors: Optional[Sequence[str]] = None,
    timeout: float = 30.0,
    splits: Sequence[str] = ("train", "test"),
) -> str:
    """Fetches the gzipped MNIST files into ``cache_dir`` (on a machine that is online).

    Files already in ``cache_dir`` (raw or ``.gz``) whose uncompressed content has the
    known md5 are kept; the others are fetched from each of ``mirrors`` in turn
    (default :data:`MNIST_MIRRORS`) with ``urllib``, checked against the md5 and moved
    into place. Returns ``cache_dir``, ready for :func:`load_mnist`.

    Raises :class:`MNISTDownloadError` (an ``OSError``) naming every URL tried and its
    error when a file cannot be fetched from any mirror, e.g. without network access.
    """
    cache_dir = os.fspath(cache_dir)
    os.makedirs(cache_dir, exist_ok=True)
    mirrors = tuple(mirrors) if mirrors is not None else MNIST_MIRRORS
    for split in splits:
        for name in MNIST_FILES[split]:
            present = [p for p in _candidates(cache_dir, name) if os.path.isfile(p)]
            if any(_valid(p, name) for p in present):
                continue
            target = os.path.join(cache_dir, name + ".gz")
            errors = []
            for mirror in mirrors:
                url = mirror.rstrip("/") + "/" + name + ".gz"
                fd, tmp = tempfile.mkstemp(prefix=name + ".", suffix=".part", dir=cache_dir)
                try:
                    with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                        shutil.copyfileobj(resp, out)
                    if not _valid(tmp, name):
                        errors.append(f"{url}: content does not match the MNIST md5")
                        continue
                    os.replace(tmp, target)
                    break
                except (urllib.error.URLError, OSError, ValueError) as err:
                    errors.append(f"{url}: {type(err).__name__}: {getattr(err, 'reason', err)}")
                finally:
                    if os.path.exists(tmp):
                        os.remove(tmp)
            else:
                raise MNISTDownloadError(
                    f"could not download {name}.gz from any mirror (offline?). Tried:\n  "
                    + "\n  ".join(errors)
                    + f"\nWithout network access, copy the four MNIST files into {cache_dir!r} by hand "
                    "and call load_mnist on that directory."
                )
    return cache_dir
