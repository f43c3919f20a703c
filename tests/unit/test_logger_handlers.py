"""durus.logger: direct_output replaces the durus handler, it never stacks one.

The command line may call direct_output more than once (e.g. a server that
reopens its log file); each call must leave exactly one handler, writing to
the latest file only, and leave the root logger alone.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from durus import logger as durus_logger


@pytest.fixture
def restored_durus_logger() -> Iterator[logging.Logger]:
    logger = durus_logger.logger
    saved = (list(logger.handlers), logger.level, logger.propagate)
    try:
        yield logger
    finally:
        logger.handlers[:] = saved[0]
        logger.setLevel(saved[1])
        logger.propagate = saved[2]


def test_a_second_direct_output_replaces_the_first(restored_durus_logger: logging.Logger) -> None:
    first, second = io.StringIO(), io.StringIO()
    durus_logger.direct_output(first)
    durus_logger.log(logging.INFO, "one")
    durus_logger.direct_output(second)
    durus_logger.log(logging.WARNING, "two %d", 2)
    assert first.getvalue() == "one\n" and second.getvalue() == "two 2\n"
    assert len(restored_durus_logger.handlers) == 1


def test_direct_output_drops_handlers_the_application_added(
    restored_durus_logger: logging.Logger,
) -> None:
    extra = io.StringIO()
    restored_durus_logger.addHandler(logging.StreamHandler(extra))
    root_handlers = list(logging.getLogger().handlers)
    sink = io.StringIO()
    durus_logger.direct_output(sink)
    durus_logger.log(logging.ERROR, "only here")
    assert sink.getvalue() == "only here\n" and extra.getvalue() == ""
    assert logging.getLogger().handlers == root_handlers
