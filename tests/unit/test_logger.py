"""durus.logger: a library logger that leaves the host program's streams alone."""

from __future__ import annotations

import importlib
import io
import logging
import sys

from durus import logger as durus_logger


def test_import_never_rebinds_standard_streams() -> None:
    stdout, stderr = sys.stdout, sys.stderr
    sys.stderr = io.StringIO()
    try:
        importlib.reload(durus_logger)
        assert sys.stdout is stdout
    finally:
        sys.stderr = stderr
    assert not durus_logger.logger.handlers or all(
        not isinstance(h, logging.StreamHandler) for h in durus_logger.logger.handlers
    )


def test_direct_output_configures_only_the_durus_logger() -> None:
    stdout, stderr = sys.stdout, sys.stderr
    sink = io.StringIO()
    saved = (list(durus_logger.logger.handlers), durus_logger.logger.level)
    try:
        durus_logger.direct_output(sink)
        durus_logger.log(20, "hello %s", "world")
        durus_logger.log(10, "hidden")
        assert sink.getvalue() == "hello world\n"
        assert durus_logger.is_logging(20) and not durus_logger.is_logging(10)
        assert sys.stdout is stdout and sys.stderr is stderr
    finally:
        durus_logger.logger.handlers[:] = saved[0]
        durus_logger.logger.setLevel(saved[1])
        durus_logger.logger.propagate = True
