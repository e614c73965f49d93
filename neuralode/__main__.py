"""``python -m neuralode``: the versions and build settings a bug report needs."""

from .config import show_config

show_config()
