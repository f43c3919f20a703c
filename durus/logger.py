"""Logging for durus: the ``durus`` logger and helpers.

Unlike Durus 4.3, importing this module never touches ``sys.stdout`` or
``sys.stderr`` and installs no handler: a library leaves the host program's
streams and logging configuration alone. ``direct_output`` configures a
handler for the ``durus`` logger only (the command line uses it).
"""

from __future__ import annotations

import logging
from typing import IO, Any

logger = logging.getLogger("durus")


def log(level: int, message: str, *args: Any) -> None:
    """Log ``message % args`` at ``level`` on the durus logger."""
    logger.log(level, message, *args)


def is_logging(level: int) -> bool:
    """True when a message at ``level`` would be handled."""
    return logger.getEffectiveLevel() <= level


def direct_output(file: IO[str]) -> None:
    """Send durus log messages, message text only, to ``file`` at level INFO.

    Replaces the durus logger's handlers. The standard streams are never
    rebound (Durus 4.3 redirected ``sys.stdout`` and ``sys.stderr`` here).
    """
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(file)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    assert len(logger.handlers) == 1
