"""Livefeed's benchmarks, run as modules: ``python -m bench.run_all`` (see README.md).

The server under test is started through :mod:`harness`, as in the tests.
"""
