"""Unit tests of the parts of step workflows that need no store.

Code fingerprints, read tracking, step discovery and ordering, and the
restore-or-rerun decision with its explanations.
"""

from __future__ import annotations

import textwrap
from typing import Any

import numpy as np
import pytest

from safepoint.errors import StepConfigError, StepError
from safepoint.workflows.fingerprint import ABSENT, code_fingerprint, value_digest
from safepoint.workflows.steps._plan import RECORD_SCHEMA, StoredStep, Upstream, decide
from safepoint.workflows.steps._tracking import LazyOutputs, TrackedMapping


def _compile(source: str, name: str, filename: str) -> Any:
    """Define a function from source text kept in linecache (as a real module would)."""
    import linecache

    text = textwrap.dedent(source)
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    ns: dict[str, Any] = {}
    exec(compile(text, filename, "exec"), ns)
    return ns[name]


# -- code fingerprints ----------------------------------------------------------------
BASE = """
def step_2(self, outputs):
    df = outputs["step_1"]
    return df * 2
"""

SAME_CODE = {
    "comment": """
def step_2(self, outputs):
    # double everything
    df = outputs["step_1"]  # the cleaned data
    return df * 2
""",
    "formatting": """
def step_2(self,
           outputs):

    df = outputs[ 'step_1' ]
    return (df*2)
""",
    "docstring": """
def step_2(self, outputs):
    '''Double the cleaned data.

    A long explanation.
    '''
    df = outputs["step_1"]
    return df * 2
""",
    "decorator": """
def deco(f):
    return f

@deco
def step_2(self, outputs):
    df = outputs["step_1"]
    return df * 2
""",
}

OTHER_CODE = {
    "constant": BASE.replace("* 2", "* 3"),
    "operator": BASE.replace("* 2", "+ 2"),
    "key": BASE.replace('"step_1"', '"step_0"'),
    "statement": BASE.replace("    return", "    df = df.copy()\n    return"),
}


@pytest.mark.parametrize("case", sorted(SAME_CODE))
def test_fingerprint_ignores_comments_formatting_docstrings(case: str) -> None:
    base = _compile(BASE, "step_2", "<base>")
    other = _compile(SAME_CODE[case], "step_2", f"<same-{case}>")
    assert code_fingerprint(base).startswith("ast:")
    assert code_fingerprint(other) == code_fingerprint(base)


@pytest.mark.parametrize("case", sorted(OTHER_CODE))
def test_fingerprint_sees_changes_of_behaviour(case: str) -> None:
    base = _compile(BASE, "step_2", "<base>")
    other = _compile(OTHER_CODE[case], "step_2", f"<other-{case}>")
    assert code_fingerprint(other) != code_fingerprint(base)


def test_fingerprint_of_a_method_indented_in_a_class() -> None:
    source = """
    class T:
        def step_1(self, outputs):
            return 1
    """
    cls = _compile(source, "T", "<class-T>")
    plain = _compile("def step_1(self, outputs):\n    return 1\n", "step_1", "<plain>")
    assert code_fingerprint(cls.step_1) == code_fingerprint(plain)


def test_fingerprint_without_source_falls_back_to_bytecode() -> None:
    ns: dict[str, Any] = {}
    exec(compile("def f(x):\n    return x + 1\n", "<nosource-a>", "exec"), ns)
    a = ns["f"]
    exec(compile("def f(x):\n\n    return x+1  # same\n", "<nosource-b>", "exec"), ns)
    b = ns["f"]
    exec(compile("def f(x):\n    return x + 2\n", "<nosource-c>", "exec"), ns)
    c = ns["f"]
    assert code_fingerprint(a).startswith("bytecode:")
    assert code_fingerprint(a) == code_fingerprint(b)
    assert code_fingerprint(a) != code_fingerprint(c)
    assert code_fingerprint(lambda x: x).startswith("bytecode:")


def test_value_digest_tells_types_and_values_apart() -> None:
    values = [1, 1.0, True, "1", [1], (1,), {"a": 1}, None, float("nan"), 2]
    digests = [value_digest(v) for v in values]
    assert len(set(digests)) == len(values)
    assert value_digest({"b": 1, "a": [1, 2]}) == value_digest({"a": [1, 2], "b": 1})
    arr = np.arange(5)
    assert value_digest(arr) == value_digest(arr.copy())
    assert value_digest(arr) != value_digest(arr + 1)
    assert value_digest(arr).startswith("sp:")
    assert ABSENT not in digests


# -- read tracking ---------------------------------------------------------------------
def test_tracked_mapping_records_reads_only() -> None:
    seen = TrackedMapping({"step_1": 1, "step_2": 2, "step_3": 3}, what="outputs", owner="step_4")
    assert list(seen) == ["step_1", "step_2", "step_3"]
    assert len(seen) == 3 and "step_1" in seen
    assert seen.read == set()
    assert seen["step_2"] == 2
    assert seen.get("step_3") == 3
    assert seen.read == {"step_2", "step_3"}
    with pytest.raises(KeyError, match=r"step_4 reads outputs\['step_9'\].*step_1, step_2"):
        seen["step_9"]
    assert dict(seen.items()) == {"step_1": 1, "step_2": 2, "step_3": 3}
    assert seen.read >= {"step_1", "step_2", "step_3"}


def test_tracked_params_count_absent_keys_as_read() -> None:
    params = TrackedMapping({"C": 1.0}, what="params", owner="step_1")
    assert params.get("alpha", 0.5) == 0.5
    assert "depth" not in params
    assert params.read == {"alpha", "depth"}


def test_lazy_outputs_load_once_on_first_read() -> None:
    calls: list[str] = []
    out = LazyOutputs()

    def loader() -> str:
        calls.append("load")
        return "restored"

    out.set_loader("step_1", loader)
    out.set_value("step_2", "computed")
    assert list(out) == ["step_1", "step_2"]
    assert calls == []
    view = out.view(["step_1"])
    assert list(view) == ["step_1"] and "step_2" not in view
    assert view["step_1"] == "restored" and out["step_1"] == "restored"
    assert calls == ["load"]


# -- decisions --------------------------------------------------------------------------
def _stored(name: str, *, code: str = "c", params: dict[str, str] | None = None,
            inputs: dict[str, dict[str, Any]] | None = None, version: int = 1,
            digest: str = "d", forced: bool = False) -> StoredStep:  # fmt: skip
    record = {
        "schema": RECORD_SCHEMA,
        "code": code,
        "params": params or {},
        "inputs": inputs or {},
        "forced": forced,
    }
    return StoredStep(name, version, digest, 10, None, record)


def _params(**values: str) -> Any:
    return lambda key: values.get(key, ABSENT)


def test_decide_missing_forced_and_cached() -> None:
    dec = decide("step_1", None, code="c", param_digest=_params(), upstream={})
    assert dec.state == "missing" and dec.explain() == "step_1 runs: no saved output yet"
    stored = _stored("step_1")
    dec = decide("step_1", stored, code="c", param_digest=_params(), upstream={})
    assert dec.state == "cached" and not dec.rerun
    dec = decide(
        "step_1", stored, code="c", param_digest=_params(), upstream={}, forced_by="forced by x"
    )
    assert dec.state == "forced" and dec.explain() == "step_1 reruns: forced by x"


def test_decide_explains_code_params_and_inputs() -> None:
    stored = _stored(
        "step_3",
        params={"C": "p1", "alpha": ABSENT, "gone": "g"},
        inputs={"step_2": {"digest": "d2", "version": 1}},
    )
    up = {"step_2": Upstream("d2-new", 2, reran=True)}
    dec = decide(
        "step_3", stored, code="c-new", param_digest=_params(C="p2", alpha="a"), upstream=up
    )
    assert dec.state == "stale"
    assert dec.reasons == [
        "its code changed",
        "parameter 'C' changed",
        "parameter 'alpha' was added",
        "parameter 'gone' was removed",
        "step_2's output changed",
    ]
    assert dec.explain().startswith("step_3 reruns: its code changed; parameter 'C' changed")


def test_decide_restores_when_upstream_reran_to_the_same_output() -> None:
    stored = _stored("step_3", inputs={"step_2": {"digest": "d2", "version": 1}})
    up = {"step_2": Upstream("d2", 2, reran=True)}
    dec = decide("step_3", stored, code="c", param_digest=_params(), upstream=up)
    assert dec.state == "cached"
    assert dec.notes == ["step_2 reran but its output is unchanged"]
    # ... unless that rerun was forced by start_from (also after a crash: the forced
    # flag is part of step_2's saved record)
    up = {"step_2": Upstream("d2", 2, forced=True)}
    dec = decide("step_3", stored, code="c", param_digest=_params(), upstream=up)
    assert dec.reasons == ["step_2 was rerun by start_from"]


def test_decide_ignores_outputs_that_were_not_read() -> None:
    stored = _stored("step_3", inputs={"step_2": {"digest": "d2", "version": 1}})
    up = {"step_1": Upstream("changed", 9, reran=True), "step_2": Upstream("d2", 1)}
    assert decide("step_3", stored, code="c", param_digest=_params(), upstream=up).state == (
        "cached"
    )


def test_decide_in_a_plan_says_stale_downstream_of_a_rerun() -> None:
    stored = _stored("step_3", inputs={"step_2": {"digest": "d2", "version": 1}})
    up = {"step_2": Upstream(None, None, why="its code changed")}
    dec = decide("step_3", stored, code="c", param_digest=_params(), upstream=up)
    assert dec.reasons == ["it reads step_2, which will rerun (its code changed)"]
    gone = decide("step_3", stored, code="c", param_digest=_params(), upstream={})
    assert gone.reasons == ["it read step_2, which is no longer a step before it"]


def test_decide_without_code_does_not_compare_code() -> None:
    stored = _stored("step_1", code="anything")
    assert decide("step_1", stored, code=None, param_digest=_params(), upstream={}).state == (
        "cached"
    )


def test_decide_reruns_on_unknown_record_layout() -> None:
    stored = StoredStep("step_1", 1, "d", 1, None, {"schema": 99})
    dec = decide("step_1", stored, code="c", param_digest=_params(), upstream={})
    assert dec.state == "stale" and "layout 99" in dec.reasons[0]


def test_step_config_error_is_a_value_error_and_a_step_error() -> None:
    assert issubclass(StepConfigError, ValueError)
    assert issubclass(StepConfigError, StepError)


def test_fingerprint_never_uses_the_source_of_another_function(tmp_path: Any) -> None:
    import importlib.util

    path = tmp_path / "edited_module.py"
    path.write_text("def first(x):\n    return x + 1\n\n\ndef second(x):\n    return x * 2\n")
    spec = importlib.util.spec_from_file_location("edited_module", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    before = code_fingerprint(mod.second)
    assert before.startswith("ast:")
    import linecache

    # the script is edited after the import: another function now sits where `second` was
    path.write_text("def second(x):\n    return x * 3\n\n\ndef first(x):\n    return x - 1\n")
    linecache.checkcache(str(path))
    after = code_fingerprint(mod.second)
    assert after.startswith("bytecode:")  # not the AST of whatever sits at its old line
