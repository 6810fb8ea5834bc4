#!/usr/bin/env python3
"""Livefeed's command line from a checkout: ``python3 run.py --help``.

The same as the ``livefeed`` command an install provides (``app.cli:main``).
"""

from app.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
