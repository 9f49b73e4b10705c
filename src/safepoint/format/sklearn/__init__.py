"""scikit-learn in the format: what the default trust set allows, how it is checked,
how older versions' files are read.

* :mod:`.trust_table` - the reviewed trust table (generated part in :mod:`._generated`,
  written by ``tools/gen_trusted.py``), registered as a trust rule;
* :mod:`.validators` - bounds checks of the compiled structures (trees, neighbour
  indexes, gradient-boosting predictors);
* :mod:`.model_validators` - consistency checks of estimators whose predict runs
  compiled code (SVMs, k-means, vectorizers, Birch);
* :mod:`.migrations` - files written under older scikit-learn versions.

Each registers itself in :mod:`safepoint.format.registry` when imported (all are in its
``BUILTINS``). Importing them does not import scikit-learn.
"""
