"""Data sets for the paper's experiments.

:mod:`neuralode.data.mnist` reads MNIST from its standard IDX files (raw or gzipped)
in a directory, with clear errors, and can fetch them on a machine that is online.
"""

from . import mnist
from .mnist import *  # noqa: F401,F403  (the names of mnist.__all__)

__all__ = list(mnist.__all__)
