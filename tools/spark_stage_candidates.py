"""List the Spark ML stage classes the installed pyspark can load, against the reviewed table.

    python tools/spark_stage_candidates.py          # every candidate and its review status
    python tools/spark_stage_candidates.py --new    # only the ones nobody has reviewed yet

A candidate is a public class of a ``pyspark.ml`` module (``pyspark.ml.connect`` and the
torch/deepspeed distributors are not stages a saved PipelineModel can hold) that is a
``Params`` and ``MLReadable``. Its *metadata names* are the class names Spark writes in a
saved stage's ``metadata`` for it: the JVM class (``org.apache.spark.ml...``) for Java-backed
stages, and for the stages pyspark writes itself (pipelines, searches, one-vs-rest) also
the ``pyspark.ml...`` name. Review each new name, then add it to ``STAGES`` (with its folder
layout and a one-line reason) or to ``EXCLUDED`` (with the reason) in
``src/safepoint/adapters/_spark_stages.py``; ``tests/adapters/test_spark.py`` fails while a
candidate is in neither.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
from pathlib import Path

#: not stages: Spark Connect's own ML (its readers call code named in their files), the
#: deep-learning distributors, tests
SKIP = (".connect", ".tests", ".torch", ".deepspeed", ".dl_util")


def candidates() -> dict[str, str]:
    """metadata class name -> the pyspark class that loads it."""
    import pyspark.ml as ml
    from pyspark.ml.param import Params
    from pyspark.ml.util import JavaMLReadable, JavaMLReader, MLReadable

    out: dict[str, str] = {}
    for info in pkgutil.walk_packages(ml.__path__, "pyspark.ml."):
        if any(part in info.name for part in SKIP):
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # optional dependencies of pyspark (torch, ...)
            continue
        for name, cls in vars(module).items():
            if not (
                inspect.isclass(cls)
                and cls.__module__ == info.name
                and not name.startswith("_")
                and issubclass(cls, Params)
                and issubclass(cls, MLReadable)
            ):
                continue
            py = f"{info.name}.{name}"
            if issubclass(cls, JavaMLReadable):
                out[JavaMLReader._java_loader_class(cls)] = py
            else:  # read by pyspark itself: its own writer's name, and the JVM writer's
                out[py] = py
                jvm = py.replace("pyspark", "org.apache.spark")
                if name in ("Pipeline", "PipelineModel"):
                    jvm = f"org.apache.spark.ml.{name}"
                out[jvm] = py
    return out


def unreviewed() -> list[str]:
    """Candidates in neither the allowlist nor the exclusions."""
    from safepoint.adapters._spark_stages import EXCLUDED, STAGES

    return sorted(set(candidates()) - set(STAGES) - set(EXCLUDED))


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from safepoint.adapters._spark_stages import EXCLUDED, STAGES

    new = set(unreviewed())
    for meta, py in sorted(candidates().items()):
        if "--new" in argv and meta not in new:
            continue
        status = (
            f"allowed ({STAGES[meta].layout}): {STAGES[meta].reason}"
            if meta in STAGES
            else f"excluded: {EXCLUDED[meta]}"
            if meta in EXCLUDED
            else "NOT REVIEWED"
        )
        print(f"{meta}  [{py}]  {status}")
    if new:
        print(f"\n{len(new)} candidate(s) not reviewed", file=sys.stderr)
    return 1 if new else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
