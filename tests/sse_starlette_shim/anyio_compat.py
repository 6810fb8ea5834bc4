"""Stands in for upstream's ``tests/anyio_compat.py`` (not in the sdist).

Upstream unwraps one-exception groups there; ``app.sse`` never raises a
group, so this is a no-op on purpose: a test that expects a bare exception
fails here if we ever raise a group.
"""

from contextlib import nullcontext as collapse_excgroups

__all__ = ["collapse_excgroups"]
