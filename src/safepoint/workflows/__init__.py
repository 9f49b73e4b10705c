"""Workflows on top of the format and the store: steps, search, scoring."""
