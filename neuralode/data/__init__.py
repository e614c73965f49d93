"""Data sets for the paper's experiments.

:mod:`neuralode.data.mnist` reads MNIST from its standard IDX files (raw or gzipped)
in a directory, with clear errors, and can fetch them on a machine that is online.
"""

from .mnist import (
    MNIST_FILES,
    MNIST_MEAN,
    MNIST_MIRRORS,
    MNIST_STD,
    MNISTDownloadError,
    MNISTFormatError,
    MNISTNotFoundError,
    download_mnist,
    load_mnist,
    mnist_tensors,
    read_idx,
)

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
