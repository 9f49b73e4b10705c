"""The ``safepoint`` command. Each area defines its commands in its own module;
:mod:`.main` registers them."""

from __future__ import annotations

from .main import cli, main

__all__ = ["cli", "main"]
