"""Conformance suites that any Store backend or type handler must pass.

* :mod:`safepoint.testing.store_conformance`: ``StoreConformance``, a pytest class to
  subclass with a ``store_factory`` fixture for a new blob or catalog backend.
"""
