"""Executable specification of Durus's transactional semantics.

Owns the model the stateful tests compare the implementation against
(spec.model) and its prose definition (spec/README.md). Never imports durus:
the spec must stay an independent opinion, small enough to check by reading.
"""

from spec.model import (
    CACHE_STATES,
    GHOST,
    LOADED,
    OK,
    READ_CONFLICT,
    ROOT,
    STILL_CONFLICTED,
    UNCACHED,
    WRITE_CONFLICT,
    Client,
    Model,
    NotFound,
    Obj,
    Outcome,
    Raised,
    Returned,
    SpecViolation,
    transfer_replay,
)

__all__ = [
    "CACHE_STATES",
    "GHOST",
    "LOADED",
    "OK",
    "READ_CONFLICT",
    "ROOT",
    "STILL_CONFLICTED",
    "UNCACHED",
    "WRITE_CONFLICT",
    "Client",
    "Model",
    "NotFound",
    "Obj",
    "Outcome",
    "Raised",
    "Returned",
    "SpecViolation",
    "transfer_replay",
]
