"""The ``safepoint`` command. Each area registers its commands in its own module."""

from __future__ import annotations

from .main import cli, main

__all__ = ["cli", "main"]
