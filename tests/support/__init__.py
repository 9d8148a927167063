"""Test support: real upstream DNS servers and failure endpoints on loopback.

Import as ``support.upstreams`` from tests (pytest puts ``tests/`` on ``sys.path``) or as
``tests.support.upstreams`` from the repository root (the bench does this).
"""
