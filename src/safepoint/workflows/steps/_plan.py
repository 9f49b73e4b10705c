"""Deciding, step by step, whether to restore a saved output or to rerun the step.

Each saved output carries a *record* (in the store's metadata of its version):
the fingerprint of the code that produced it and of the code it reaches in the
user's modules (helpers, classes, module-level values; versions of the packages
it uses), the digests of the parameters it read, the digest and version of every
earlier output it read, and the size, mtime and digest of every file it read. A
step is restored only if all of these still hold; otherwise it reruns, and the
reasons say why (``helpers.scale changed``, ``data.csv changed: 1.2 kB -> 1.5 kB``).
What the record could not capture (a network read, compiled code) is listed as
not checked, so that a restored step never claims more than was compared. Digests
of outputs are the ones the store computed while writing; they are compared,
never recomputed from the data.

The decision is a pure function of the records, so it is the same in ``run``
(which knows the new digest of every step that reran before) and in ``status``
(which does not, and says "stale" for steps downstream of a rerun).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..fingerprint import ABSENT
from ._files import file_change

if TYPE_CHECKING:
    from ._code import CodeDeps

__all__ = ["RECORD_SCHEMA", "Decision", "StoredStep", "Upstream", "decide"]

#: version of the record layout; another one is not trusted (the step reruns).
#: 2 added the code a step reaches, the files it read and its cache option.
RECORD_SCHEMA = 2
#: how many added / removed dependencies an explanation names
_LIST_AT_MOST = 3

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

    @property
    def deps(self) -> dict[str, dict[str, str]]:
        """``{"code": {name: digest}, "packages": {name: version}}`` as recorded."""
        v = self.record.get("deps")
        out: dict[str, dict[str, str]] = {"code": {}, "packages": {}}
        if isinstance(v, Mapping):
            for part in out:
                got = v.get(part)
                if isinstance(got, Mapping):
                    out[part] = {str(k): str(x) for k, x in got.items()}
        return out

    @property
    def files(self) -> list[dict[str, Any]]:
        v = self.record.get("files")
        return [dict(x) for x in v if isinstance(x, Mapping)] if isinstance(v, list) else []

    @property
    def code_unchecked(self) -> list[str]:
        """What the step's code reached that cannot be compared (compiled code, eval)."""
        deps = self.record.get("deps")
        v = deps.get("unchecked") if isinstance(deps, Mapping) else None
        return [str(x) for x in v] if isinstance(v, list) else []

    @property
    def io_unchecked(self) -> list[str]:
        """What the step reached while it ran that cannot be compared (network, ...)."""
        v = self.record.get("io_unchecked")
        return [str(x) for x in v] if isinstance(v, list) else []


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
    """What happens to one step, and why.

    ``compared`` names what was compared for a restored step (``code``,
    ``parameters``, ``inputs``, ``files read``); ``not_compared`` what was not (the
    CLI has neither the code nor the parameters); ``unchecked`` what the step
    reached that no record can compare (a network read, compiled code); ``pinned``
    the reasons a ``cache="always"`` step would otherwise have rerun for.
    """

    step: str
    state: State
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    compared: list[str] = field(default_factory=lambda: ["code", "parameters", "inputs"])
    not_compared: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    pinned: list[str] = field(default_factory=list)

    @property
    def rerun(self) -> bool:
        return self.state != "cached"

    def explain(self) -> str:
        """One line: ``step_2 reruns: helpers.scale changed``."""
        if self.state != "cached":
            verb = "runs" if self.state == "missing" else "reruns"
            return f"{self.step} {verb}: {'; '.join(self.reasons)}"
        if self.pinned:
            head = (
                f"{self.step} is restored: pinned with cache='always', although "
                f"{'; '.join(self.pinned)}"
            )
        else:
            head = f"{self.step} is restored: {_words(self.compared)} unchanged"
        extra = f" ({'; '.join(self.notes)})" if self.notes else ""
        tail = ""
        if self.not_compared:
            tail += f"; {_words(self.not_compared)} not compared"
        if self.unchecked:
            tail += f"; not checked: {'; '.join(self.unchecked)}"
        return head + extra + tail

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "state": self.state,
            "reasons": list(self.reasons),
            "notes": list(self.notes),
            "compared": list(self.compared),
            "not_compared": list(self.not_compared),
            "unchecked": list(self.unchecked),
            "pinned": list(self.pinned),
            "explanation": self.explain(),
        }


def _words(items: list[str]) -> str:
    """``["a", "b", "c"]`` -> ``"a, b and c"``."""
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} and {items[-1]}"


def _dependency_reasons(old: Mapping[str, Mapping[str, str]], new: CodeDeps) -> list[str]:
    """Why the code a step reaches differs: ``helpers.scale changed``, versions, ..."""
    reasons: list[str] = []
    old_code, new_code = old.get("code", {}), new.code
    for name in sorted(set(old_code) & set(new_code)):
        if old_code[name] != new_code[name]:
            reasons.append(f"{name} changed")
    old_pk, new_pk = old.get("packages", {}), new.packages
    for name in sorted(set(old_pk) & set(new_pk)):
        if old_pk[name] != new_pk[name]:
            reasons.append(f"{name} changed: {old_pk[name]} -> {new_pk[name]}")
    if reasons:
        return reasons
    # nothing it used before changed, yet it uses other things now (a module-level
    # name rebound to something else, say): name them
    added = sorted(set(new_code) - set(old_code)) + sorted(set(new_pk) - set(old_pk))
    removed = sorted(set(old_code) - set(new_code))
    if added:
        more = f" and {len(added) - _LIST_AT_MOST} more" if len(added) > _LIST_AT_MOST else ""
        reasons.append(f"it now uses {', '.join(added[:_LIST_AT_MOST])}{more}")
    if removed:
        more = f" and {len(removed) - _LIST_AT_MOST} more" if len(removed) > _LIST_AT_MOST else ""
        reasons.append(f"it no longer uses {', '.join(removed[:_LIST_AT_MOST])}{more}")
    return reasons


def decide(
    step: str,
    stored: StoredStep | None,
    *,
    code: str | None,
    param_digest: Callable[[str], str] | None,
    upstream: Mapping[str, Upstream],
    forced_by: str | None = None,
    deps: CodeDeps | None = None,
    cache: str = "auto",
    check_files: bool = True,
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
        deps: what its code reaches now (helpers, values, packages); None: not
            compared (with ``code=None``: the code is unknown).
        cache: ``"auto"``, ``"always"`` (restore whatever changed) or ``"never"``.
        check_files: compare the files it read with their record.
    """
    if forced_by is not None:
        return Decision(step, "forced", [forced_by])
    if stored is None:
        return Decision(step, "missing", ["no saved output yet"])
    schema = stored.record.get("schema")
    if schema != RECORD_SCHEMA:
        why = f"its saved record has layout {schema!r}, this safepoint writes {RECORD_SCHEMA}"
        if schema == 1:
            why += " (it now also records the helpers it calls and the files it reads)"
            if cache == "always":  # a pinned output stays pinned across the upgrade
                return Decision(step, "cached", pinned=[why])
        return Decision(step, "stale", [why])
    if cache == "never":
        return Decision(step, "stale", ["cache='never': it reruns at every run"])
    reasons: list[str] = []
    notes: list[str] = []
    compared = ["code", "parameters", "inputs"]
    not_compared: list[str] = []
    if code is None:
        compared.remove("code")
        not_compared.append("code")
    elif stored.code != code:
        reasons.append("its code changed")
    if deps is not None and code is not None:
        reasons.extend(_dependency_reasons(stored.deps, deps))
    if param_digest is None:
        compared.remove("parameters")
        not_compared.append("parameters")
    compared_params = sorted(stored.params.items()) if param_digest is not None else []
    for key, old in compared_params:
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
    files = stored.files
    if files and check_files:
        compared.append("files read")
        for record in files:
            reason, note = file_change(record)
            if reason:
                reasons.append(reason)
            if note:
                notes.append(note)
    elif files:
        not_compared.append("files read")
    if deps is not None and code is not None:
        unchecked = list(deps.unchecked)
    else:
        unchecked = stored.code_unchecked
    unchecked += [u for u in stored.io_unchecked if u not in unchecked]
    if reasons and cache == "always":
        return Decision(step, "cached", [], notes, compared, not_compared, unchecked, reasons)
    if reasons:
        return Decision(step, "stale", reasons, notes, compared, not_compared, unchecked)
    return Decision(step, "cached", [], notes, compared, not_compared, unchecked)
