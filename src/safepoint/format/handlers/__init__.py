"""Built-in type handlers; importing this package registers them."""

from . import builtins, numpy_, objects, pandas_, scipy_, sklearn_, strings  # noqa: F401
