"""Deciding, step by step, whether to restore a saved output or to rerun the step.

Each saved output carries a *record* (in the store's metadata of its version):
the fingerprint of the code that produced it, the digests of the parameters it
read, and the digest and version of every earlier output it read. A step is
restored only if all of these still hold; otherwise it reruns, and the reasons
say why. Digests of outputs are the ones the store computed while writing; they
are compared, never recomputed from the data.

The decision is a pure function of the records, so it is the same in ``run``
(which knows the new digest of every step that reran before) and in ``status``
(which does not, and says "stale" for steps downstream of a rerun).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .fingerprint import ABSENT

__all__ = ["RECORD_SCHEMA", "Decision", "StoredStep", "Upstream", "decide"]

#: version of the record layout; a newer one is not trusted (the step reruns)
RECORD_SCHEMA = 1

State = Literal["cached", "stale", "missing", "forced"]


@dataclass(frozen=True)
class StoredStep:
    """The latest saved output of a step, as the catalog describes it (no data read)."""

    name: str
    version: int
    digest: str
    size: int | None
    created: Any
    record: Mapping[str, Any]

    @property
    def code(self) -> str | None:
        v = self.record.get("code")
        return v if isinstance(v, str) else None

    @property
    def params(self) -> dict[str, str]:
        v = self.record.get("params")
        return dict(v) if isinstance(v, Mapping) else {}

    @property
    def inputs(self) -> dict[str, dict[str, Any]]:
        v = self.record.get("inputs")
        return {k: dict(x) for k, x in v.items()} if isinstance(v, Mapping) else {}

    @property
    def forced(self) -> bool:
        return bool(self.record.get("forced", False))

    @property
    def type(self) -> str | None:
        v = self.record.get("type")
        return v if isinstance(v, str) else None


@dataclass(frozen=True)
class Upstream:
    """What a later step sees of an earlier one in this run (or in a plan).

    ``digest`` is None when the step will rerun and its new output is not known
    yet (in ``status``); ``reran`` says the step reran in this run; ``forced``
    that it was forced by ``start_from``.
    """

    digest: str | None
    version: int | None
    forced: bool = False
    reran: bool = False
    why: str = ""


@dataclass
class Decision:
    """What happens to one step, and why."""

    step: str
    state: State
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def rerun(self) -> bool:
        return self.state != "cached"

    def explain(self) -> str:
        """One line: ``step_2 reruns: its code changed``."""
        if self.state == "cached":
            extra = f" ({'; '.join(self.notes)})" if self.notes else ""
            return f"{self.step} is restored: code, parameters and inputs unchanged{extra}"
        verb = "runs" if self.state == "missing" else "reruns"
        return f"{self.step} {verb}: {'; '.join(self.reasons)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "state": self.state,
            "reasons": list(self.reasons),
            "notes": list(self.notes),
            "explanation": self.explain(),
        }


def decide(
    step: str,
    stored: StoredStep | None,
    *,
    code: str | None,
    param_digest: Callable[[str], str] | None,
    upstream: Mapping[str, Upstream],
    forced_by: str | None = None,
) -> Decision:
    """Restore or rerun ``step``?

    Args:
        step: the step's name.
        stored: its latest saved output, or None.
        code: the fingerprint of its current code (None: unknown, e.g. in the CLI
            without the workflow's code; the code is then not compared).
        param_digest: the digest of a parameter's current value (``ABSENT`` if missing);
            None: the parameters are unknown (the CLI) and not compared.
        upstream: what each earlier step is in this run (by name).
        forced_by: a reason to rerun regardless (``start_from``), or None.
    """
    if forced_by is not None:
        return Decision(step, "forced", [forced_by])
    if stored is None:
        return Decision(step, "missing", ["no saved output yet"])
    schema = stored.record.get("schema")
    if schema != RECORD_SCHEMA:
        return Decision(
            step,
            "stale",
            [f"its saved record has layout {schema!r}, this safepoint writes {RECORD_SCHEMA}"],
        )
    reasons: list[str] = []
    notes: list[str] = []
    if code is not None and stored.code != code:
        reasons.append("its code changed")
    compared = sorted(stored.params.items()) if param_digest is not None else []
    for key, old in compared:
        new = param_digest(key) if param_digest is not None else old
        if new == old:
            continue
        if old == ABSENT:
            reasons.append(f"parameter {key!r} was added")
        elif new == ABSENT:
            reasons.append(f"parameter {key!r} was removed")
        else:
            reasons.append(f"parameter {key!r} changed")
    for name, seen in stored.inputs.items():
        up = upstream.get(name)
        if up is None:
            reasons.append(f"it read {name}, which is no longer a step before it")
        elif up.digest is None:
            why = f" ({up.why})" if up.why else ""
            reasons.append(f"it reads {name}, which will rerun{why}")
        elif up.digest != seen.get("digest"):
            reasons.append(f"{name}'s output changed")
        elif up.version != seen.get("version"):
            if up.forced:
                reasons.append(f"{name} was rerun by start_from")
            elif up.reran:
                notes.append(f"{name} reran but its output is unchanged")
    if reasons:
        return Decision(step, "stale", reasons, notes)
    return Decision(step, "cached", [], notes)
