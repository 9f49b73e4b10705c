"""The main job of the README: a tour of safepoint on the embedded default.

Each part prints what it does and checks its own result, so that the README's
first command fails loudly if anything is off. Later parts (store, steps,
search, scoring) register themselves in ``PARTS``.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .errors import FormatError, SafepointError, UntrustedTypesError

Say = Callable[[str], None]
PARTS: list[tuple[str, Callable[[Path, Say], None]]] = []


def part(title: str) -> Callable[[Callable[[Path, Say], None]], Callable[[Path, Say], None]]:
    def deco(fn: Callable[[Path, Say], None]) -> Callable[[Path, Say], None]:
        PARTS.append((title, fn))
        return fn

    return deco


class _Exploit:
    """A pickle payload that would run a shell command when unpickled."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("echo PWNED > /tmp/safepoint-demo-pwned",))


@part("format: save, inspect, load a model; refuse a crafted file")
def format_part(workdir: Path, say: Say) -> None:
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import safepoint as sp

    X, y = make_classification(n_samples=2000, n_features=20, random_state=0)
    model = make_pipeline(StandardScaler(), RandomForestClassifier(50, random_state=0)).fit(X, y)
    path = workdir / "model.sp"
    res = sp.dump(model, path, golden=X[:20], metadata={"dataset": "make_classification"})
    say(f"saved {path} ({res.size:,} bytes, digest {res.digest[:12]})")
    info = sp.inspect(path)
    say(
        f"inspect: {info.root_type}, {len(info.types)} types, untrusted: {info.untrusted or 'none'}"
    )
    loaded = sp.load(path)
    same = bool(np.array_equal(loaded.predict(X), model.predict(X)))
    say(f"loaded safely; predictions identical: {same}")
    if not same:
        raise SystemExit("demo failed: predictions differ after load")
    report = sp.verify(path)
    say(f"verify: {'OK' if report.ok else 'FAILED'} (golden {report.golden})")

    evil = workdir / "evil.sp"
    evil.write_bytes(pickle.dumps(_Exploit()))
    try:
        sp.load(evil)
    except FormatError as exc:
        say(f"a pickle renamed to .sp is refused: {str(exc)[:90]}...")
    else:  # pragma: no cover - would be a security bug
        raise SystemExit("demo failed: a pickle file was accepted")

    class_ref = workdir / "untrusted.sp"
    sp.dump({"scorer": np.random.RandomState(0), "fn": os.path.join}, class_ref)
    try:
        sp.load(class_ref)
    except UntrustedTypesError as exc:
        say(f"a file naming os.path.join is refused before any import: {exc.types}")
    if Path("/tmp/safepoint-demo-pwned").exists():  # pragma: no cover
        raise SystemExit("demo failed: the exploit ran")


def run(workdir: str | os.PathLike[str] = "safepoint-demo", quiet: bool = False) -> None:
    """Run every part of the demo in ``workdir``."""
    from rich.console import Console

    console = Console(quiet=quiet)
    root = Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    for i, (title, fn) in enumerate(PARTS, 1):
        console.rule(f"[bold]{i}. {title}")
        try:
            fn(root, lambda s: console.print("  " + s, highlight=False))
        except SafepointError as exc:
            raise SystemExit(f"demo failed in part {i} ({title}): {exc}") from exc
    console.print(f"[green]demo complete[/green]; files are in {root.resolve()}")
