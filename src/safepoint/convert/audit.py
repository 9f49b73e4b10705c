"""The audit: every name an inert graph needs, and whether each is allowed.

It walks the graph (iteratively, each node once), classifies every call with
:func:`~safepoint.convert.semantics.plan_call` and checks every name against
its role (see :mod:`safepoint.convert.semantics`) and the
:class:`~safepoint.format.trust.TrustPolicy`. Nothing is imported.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import FormatError
from ..format.trust import TrustPolicy
from .nodes import Call, DictNode, GlobalRef, ListNode, SetNode, TupleNode
from .semantics import Plan, plan_call

__all__ = ["AuditResult", "audit"]

_PLAIN = frozenset({type(None), bool, int, float, str})
_POLICY_KIND = {"class": "obj", "call": "red", "ref": "ref", "pyx": "pyx"}


@dataclass
class AuditResult:
    """Names needed (``"module.qualname"`` -> roles), the untrusted ones, and refusals."""

    needed: dict[str, set[str]] = field(default_factory=dict)
    untrusted: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    plans: dict[int, Plan] = field(default_factory=dict)
    n_nodes: int = 0

    @property
    def safe(self) -> bool:
        return not self.untrusted and not self.problems

    def types(self) -> list[dict[str, Any]]:
        bad = set(self.untrusted)
        return [
            {"name": n, "roles": sorted(r), "trusted": n not in bad}
            for n, r in sorted(self.needed.items())
        ]


def audit(root: Any, trusted: Iterable[Any] | str | type | None = ()) -> AuditResult:
    """Audit the graph under ``root`` with the default trust set plus ``trusted``."""
    policy = TrustPolicy(trusted)
    res = AuditResult()
    bad: set[str] = set()
    seen: set[int] = set()
    todo: list[Any] = [root]
    dtypes: dict[int, Any] = {}

    default = TrustPolicy(())

    def need(ref: GlobalRef, role: str) -> None:
        name = ref.qualified
        res.needed.setdefault(name, set()).add(role)
        if role == "known":
            return
        if not policy.is_trusted(ref.module, ref.name, _POLICY_KIND[role]):
            bad.add(name)
        elif role == "call" and not default.is_trusted(ref.module, ref.name, "red"):
            # calling a class runs its __init__ with arguments chosen by the file: only
            # for the default trust set (scikit-learn's Tree, losses); names trusted by
            # the caller are only ever built from their state
            res.problems.append(
                f"the pickle calls {name} with arguments; safepoint builds classes trusted "
                "with trusted= only from their state (cls.__new__ + __setstate__), never "
                "by calling them"
            )

    while todo:
        node = todo.pop()
        if node is None or type(node) in (bool, int, float, str):
            continue
        if isinstance(node, GlobalRef):
            # a name used as a value (a function or class stored in the model)
            need(node, "ref")
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        res.n_nodes += 1
        if isinstance(node, ListNode | TupleNode | SetNode):
            todo.extend(x for x in node.items if type(x) not in _PLAIN)
        elif isinstance(node, DictNode):
            for k, v in node.pairs:
                if type(k) not in _PLAIN:
                    todo.append(k)
                if type(v) not in _PLAIN:
                    todo.append(v)
        elif isinstance(node, Call):
            try:
                plan = plan_call(node, dtypes)
            except FormatError as exc:
                res.problems.append(str(exc))
                # still list the names involved, so that the report is complete
                todo.extend(_loose_children(node))
                continue
            res.plans[id(node)] = plan
            for ref, role in plan.names:
                need(ref, role)
            todo.extend(plan.children)
    res.untrusted = sorted(bad)
    res.problems = list(dict.fromkeys(res.problems))
    return res


def _loose_children(call: Call) -> list[Any]:
    out: list[Any] = [call.callee, call.args]
    if call.kwargs is not None:
        out.append(call.kwargs)
    for op, payload in call.ops:
        if op == "build":
            out.append(payload)
        elif op == "appends":
            out.extend(payload)
        else:
            for k, v in payload:
                out += [k, v]
    return out


_DANGEROUS_MODULES = ("os", "posix", "nt", "subprocess", "shutil", "socket", "sys", "pty")
_DANGEROUS_BUILTINS = ("eval", "exec", "compile", "getattr", "setattr", "__import__", "open")


def hints(untrusted: Iterable[str]) -> list[str]:
    """Advice on what a set of refused names usually means and what to do instead."""
    names = list(untrusted)
    out = []
    if any(
        n.split(".")[0] in _DANGEROUS_MODULES or n in {f"builtins.{b}" for b in _DANGEROUS_BUILTINS}
        for n in names
    ):
        out.append(
            "the file names functions that run commands or code (os/subprocess/eval/getattr): "
            "it is very likely malicious; do not trust these names"
        )
    if any(n.startswith(("pandas.", "pyarrow.")) for n in names):
        out.append(
            "pandas objects inside pickles (DataFrame, Series, Index, Categorical) are not "
            "imported: their pickles rebuild pandas internals (block managers, Arrow buffers) "
            "through pandas' own helpers. Load the file where you trust it and save the pandas "
            "object with sp.dump, which stores DataFrames natively"
        )
    if any(n.startswith("joblib.numpy_pickle") and "NDArrayWrapper" in n for n in names):
        out.append(
            "this is the joblib < 0.10 format, whose arrays live in separate files: re-save it "
            "with a current joblib where you trust it"
        )
    if any(n.startswith("torch.") for n in names):
        out.append("PyTorch objects: save state_dicts with safepoint's torch adapter instead")
    if any(n.startswith("numpy.ma.") for n in names):
        out.append(
            "numpy.ma: only plain MaskedArray objects are imported (not subclasses or other "
            "numpy.ma helpers)"
        )
    return out


def trust_would_help(untrusted: Iterable[str]) -> bool:
    """False when trusting the names cannot (or must not) make the import work."""
    return not hints(untrusted)
