#!/usr/bin/env python3
"""Livefeed's command line: ``python run.py --help``."""

from app.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
