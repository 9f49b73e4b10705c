"""The web console for a store: ``safepoint ui --store URL``."""

from .app import create_app

__all__ = ["create_app"]
