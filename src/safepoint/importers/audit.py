"""The audit: every name an inert graph needs, and whether each is allowed.

It walks the graph (iteratively, each node once), classifies every call with
:func:`~safepoint.importers.semantics.plan_call` and checks every name against
its role (see :mod:`safepoint.importers.semantics`) and the
:class:`~safepoint.format.trust.TrustPolicy`. Nothing is imported.

``pickle`` runs every call of a stream, not only those the returned value holds,
so :func:`audit_stream` also audits every name and call the parser recorded that
the result does not contain (dropped with POP / POP_MARK, memoised and never used,
left on the stack) and refuses the stream when there is any: no pickle writer
produces them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._types import Trusted
from ..errors import FormatError
from ..format.trust import TrustPolicy
from .nodes import Call, DictNode, GlobalRef, ListNode, SetNode, TupleNode, new_walk
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
    #: what was examined: pickle streams, opcodes, calls and names (for the scan report)
    checked: dict[str, int] = field(default_factory=dict)

    def merge(self, other: AuditResult) -> None:
        """Fold the audit of another stream of the same file into this one."""
        for name, roles in other.needed.items():
            self.needed.setdefault(name, set()).update(roles)
        self.untrusted = sorted(set(self.untrusted) | set(other.untrusted))
        self.problems = list(dict.fromkeys(self.problems + other.problems))
        self.plans.update(other.plans)
        self.n_nodes += other.n_nodes
        for k, v in other.checked.items():
            self.checked[k] = self.checked.get(k, 0) + v

    @property
    def safe(self) -> bool:
        return not self.untrusted and not self.problems

    def types(self) -> list[dict[str, Any]]:
        bad = set(self.untrusted)
        return [
            {"name": n, "roles": sorted(r), "trusted": n not in bad}
            for n, r in sorted(self.needed.items())
        ]


def audit(
    root: Any,
    trusted: Trusted = (),
    *,
    extra: Sequence[Any] = (),
) -> AuditResult:
    """Audit the graph under ``root`` with the default trust set plus ``trusted``.

    ``extra`` are more nodes to audit the same way (the calls and names a stream made
    that ``root`` does not contain, see :func:`audit_stream`).
    """
    policy = TrustPolicy(trusted)
    res = AuditResult()
    bad: set[str] = set()
    walk = new_walk()
    todo: list[Any] = [*extra, root]
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
        if node.mark == walk:
            continue
        node.mark = walk
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
    res.checked["calls"] = len(res.plans)
    return res


def reachable(root: Any) -> int:
    """Marks every node the value ``root`` contains (structurally, whatever the plans)
    with a new walk number, and returns it: ``node.mark == walk`` means contained."""
    walk = new_walk()
    todo: list[Any] = [root]
    while todo:
        node = todo.pop()
        if node is None or type(node) in _PLAIN or node.mark == walk:
            continue
        node.mark = walk
        if isinstance(node, ListNode | TupleNode | SetNode):
            todo.extend(x for x in node.items if type(x) not in _PLAIN)
        elif isinstance(node, DictNode):
            for k, v in node.pairs:
                if type(k) not in _PLAIN:
                    todo.append(k)
                if type(v) not in _PLAIN:
                    todo.append(v)
        elif isinstance(node, Call):
            todo.extend(_loose_children(node))
            if node.joblib is not None and node.joblib.nested is not None:
                todo.append(node.joblib.nested)
    return walk


def _describe(node: Any) -> str:
    if isinstance(node, GlobalRef):
        return f"the name {node.qualified}"
    callee = node.callee
    what = callee.qualified if isinstance(callee, GlobalRef) else "something that is not a name"
    return f"a call of {what}"


def audit_stream(
    root: Any,
    created: Sequence[Any],
    trusted: Trusted = (),
    *,
    leftover: int = 0,
    open_marks: int = 0,
    opcodes: int = 0,
) -> AuditResult:
    """Audit one parsed pickle stream: its result, and every name and call it made.

    ``created``, ``leftover`` and ``open_marks`` are the parser's records (see
    :class:`~safepoint.importers.pickle_parser.PickleParser`). A name or call that the
    result does not contain is audited like the others (its names are listed) and
    makes the stream refused.

    >>> from safepoint.importers.pickle_parser import PickleParser
    >>> p = PickleParser(b"\\x80\\x02cos\\nsystem\\nX\\x02\\x00\\x00\\x00ls\\x85R0}.")
    >>> root = p.parse()
    >>> res = audit_stream(root, p.created, leftover=p.leftover)
    >>> res.untrusted, res.safe
    (['os.system'], False)
    """
    walk = reachable(root)
    dropped = [n for n in created if n.mark != walk]
    calls = [n for n in dropped if isinstance(n, Call)]
    # a dropped name that is the callee of a dropped call is audited in its role there;
    # only names nothing uses are audited as plain references
    inside = reachable(TupleNode(calls)) if calls else -1
    names = [n for n in dropped if isinstance(n, GlobalRef) and n.mark != inside]
    res = audit(root, trusted, extra=[*calls, *names])
    if dropped:
        res.problems.append(
            f"the stream creates {len(dropped)} name(s) or call(s) that the value it returns "
            "does not contain (dropped with POP or POP_MARK, kept only in the memo, or left "
            f"on the stack), first {_describe(dropped[0])}: unpickling would still import and "
            "run them, and no pickle writer produces this (crafted file); refused"
        )
    if leftover or open_marks:
        res.problems.append(
            f"the stream ends with {leftover} value(s) left on the stack under its result"
            + (f" and {open_marks} unclosed MARK(s)" if open_marks else "")
            + ": pickle ignores them after running what made them; no pickle writer "
            "produces this (crafted file); refused"
        )
    res.checked.update(pickle_streams=1, opcodes=opcodes)
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
