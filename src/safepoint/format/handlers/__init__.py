"""Built-in type handlers; each module registers its handlers when imported (they are
listed in :data:`safepoint.format.registry.BUILTINS`, which loads them)."""
