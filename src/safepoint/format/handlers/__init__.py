"""Built-in type handlers; importing this package registers them."""

from . import (  # noqa: F401
    builtins,
    numpy_,
    objects,
    pandas_,
    scipy_,
    sklearn_,
    sklearn_models,
    strings,
    tables,
)
