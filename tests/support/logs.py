"""For tests that call a command's main() in-process (tasks.stage.main sets up the root logger
for a command): give pytest's logging back afterwards."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(autouse=True)
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in ("tasks", "models", "__main__")}
    yield
    root.handlers[:], root.level = handlers, level
    for name, lvl in levels.items():
        logging.getLogger(name).setLevel(lvl)
