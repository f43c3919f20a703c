"""Entry point of the ``durus`` command (console script, ``python -m durus``, or this file by path).

Owns only the start-up: making ``durus`` importable when this file is run by
path, and re-exporting the command's functions under the names Durus 4.3
offered here. The work lives in durus.cli (and durus.check for ``-k``).
Never does anything at import time beyond that, so importing
``durus.__main__`` (as Durus's own tests do, for ``stop_durus``) has no
side effects.
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):
    # Run by path: sys.path[0] is this package's directory, whose modules must not
    # shadow anything; the directory above it is where ``import durus`` should look.
    _package_dir = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _package_dir]
    sys.path.insert(0, os.path.dirname(_package_dir))

from durus.cli import (  # noqa: E402
    client_main,
    configure_readline,
    get_storage,
    get_storage_class,
    import_class,
    interactive_client,
    main,
    pack_storage_main,
    run_durus_main,
    start_durus,
    stop_durus,
    usage,
)

__all__ = [
    "client_main",
    "configure_readline",
    "get_storage",
    "get_storage_class",
    "import_class",
    "interactive_client",
    "main",
    "pack_storage_main",
    "run_durus_main",
    "start_durus",
    "stop_durus",
    "usage",
]

if __name__ == "__main__":
    sys.exit(main())
