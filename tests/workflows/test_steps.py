"""Step workflows on a real local store: ordering, invalidation with reasons, bad input.

Workflows are written as real module files (``inspect.getsource`` reads them as it
would a user's script) and imported under fresh module names, so that "editing the
script" between runs is editing a file.
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import safepoint as sp
from safepoint.errors import StepConfigError, StepError

_counter = itertools.count()


def load_module(folder: Path, source: str, name: str | None = None) -> Any:
    """Write ``source`` to a module file in ``folder`` and import it: a new module, or
    ``name`` again (the same script, edited)."""
    name = name or f"sp_steps_test_{next(_counter)}"
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


PIPELINE = """
import safepoint as sp

class Training(sp.Steps):
    def step_1(self, outputs):
        return {"rows": list(range(10))}

    def step_2(self, outputs):
        rows = outputs["step_1"]["rows"]
        return [r * 2 for r in rows]

    def step_3(self, outputs):
        return sum(outputs["step_2"]) + self.params.get("bias", 0)

    def step_4(self, outputs):
        # reads only step_1: changes to step_2 and step_3 must not rerun it
        return len(outputs["step_1"]["rows"])
"""


@pytest.fixture
def store(tmp_path: Path) -> sp.Store:
    return sp.Store(tmp_path / "store")


def make(
    tmp_path: Path,
    store: sp.Store,
    source: str = PIPELINE,
    module: str | None = None,
    **kwargs: Any,
) -> Any:
    mod = load_module(tmp_path, source, module)
    return mod.Training(name="proj/training", store=store, version=1, **kwargs)


def reasons(report: sp.workflows.steps.RunReport) -> dict[str, str]:
    return {s.step: s.explanation for s in report.steps}


def test_first_run_then_everything_restored(tmp_path: Path, store: sp.Store) -> None:
    wf = make(tmp_path, store)
    first = wf.run()
    assert first.ran == ["step_1", "step_2", "step_3", "step_4"]
    assert reasons(first)["step_1"] == "step_1 runs: no saved output yet"
    assert first.outputs["step_3"] == 90
    again = make(tmp_path, store).run()
    assert again.ran == []
    assert again.restored == ["step_1", "step_2", "step_3", "step_4"]
    # nothing was read back: a run where nothing changed loads no output
    assert all(not again.outputs.is_loaded(s) for s in again.restored)  # type: ignore[attr-defined]
    assert again.outputs["step_3"] == 90
    assert wf.load_outputs() == {
        "step_1": {"rows": list(range(10))},
        "step_2": [r * 2 for r in range(10)],
        "step_3": 90,
        "step_4": 10,
    }
    status = wf.status()
    assert [s.state for s in status] == ["cached"] * 4
    assert status.last_run is not None and status.last_run["status"] == "succeeded"


def test_comments_formatting_docstrings_do_not_rerun(tmp_path: Path, store: sp.Store) -> None:
    make(tmp_path, store).run()
    cosmetic = PIPELINE.replace(
        "    def step_2(self, outputs):\n",
        '    def step_2(self, outputs):\n        """Double the rows."""\n        # a comment\n\n',
    ).replace("[r * 2 for r in rows]", "[ r*2  for r in rows ]  # doubled")
    assert cosmetic != PIPELINE
    report = make(tmp_path, store, cosmetic).run()
    assert report.ran == []


def test_code_change_reruns_the_step_and_what_read_it(tmp_path: Path, store: sp.Store) -> None:
    make(tmp_path, store).run()
    changed = PIPELINE.replace("[r * 2 for r in rows]", "[r * 3 for r in rows]")
    wf = make(tmp_path, store, changed)
    status = wf.status()
    assert status["step_1"].state == "cached"
    assert status["step_2"].state == "stale"
    assert status["step_2"].reasons == ["its code changed"]
    assert status["step_3"].reasons == ["it reads step_2, which will rerun (its code changed)"]
    assert status["step_4"].state == "cached"
    assert "step_2" in str(status) and "its code changed" in str(status)
    report = wf.run()
    assert report.ran == ["step_2", "step_3"]
    assert reasons(report)["step_2"] == "step_2 reruns: its code changed"
    assert reasons(report)["step_3"] == "step_3 reruns: step_2's output changed"
    assert report.outputs["step_3"] == 135
    # the run log in the store's runs table says the same
    state = store.runs.list(kind="steps", name="proj/training/v1", limit=1)[0].state
    logged = {s["step"]: s["explanation"] for s in state["steps"]}
    assert logged["step_3"] == "step_3 reruns: step_2's output changed"


def test_rerun_to_an_identical_output_keeps_later_steps(tmp_path: Path, store: sp.Store) -> None:
    make(tmp_path, store).run()
    # different code, same result: step_3 and step_4 are restored
    same_result = PIPELINE.replace("[r * 2 for r in rows]", "[r + r for r in rows]")
    report = make(tmp_path, store, same_result).run()
    assert report.ran == ["step_2"]
    assert report["step_3"].action == "restored"
    assert "step_2 reran but its output is unchanged" in report["step_3"].explanation


def test_params_that_a_step_read(tmp_path: Path, store: sp.Store) -> None:
    make(tmp_path, store, params={"bias": 1, "unused": "a"}).run()
    # a parameter no step reads does not rerun anything
    assert make(tmp_path, store, params={"bias": 1, "unused": "b"}).run().ran == []
    report = make(tmp_path, store, params={"bias": 5, "unused": "b"}).run()
    assert report.ran == ["step_3"]
    assert reasons(report)["step_3"] == "step_3 reruns: parameter 'bias' changed"
    report = make(tmp_path, store).run()
    assert reasons(report)["step_3"] == "step_3 reruns: parameter 'bias' was removed"
    assert report.outputs["step_3"] == 90


def test_start_from_forces_a_rerun_from_that_step(tmp_path: Path, store: sp.Store) -> None:
    wf = make(tmp_path, store)
    wf.run()
    report = wf.run(start_from=2)
    assert report.restored == ["step_1"]
    assert report.ran == ["step_2", "step_3", "step_4"]
    assert reasons(report)["step_2"] == "step_2 reruns: forced by start_from=2"
    assert wf.run(start_from="step_4").ran == ["step_4"]
    assert wf.run().ran == []


def test_bad_start_from(tmp_path: Path, store: sp.Store) -> None:
    wf = make(tmp_path, store)
    for bad, match in [
        (5, "beyond the last step"),
        (0, "before the first step"),
        ("step_9", "not a step"),
        (1.5, "must be a step number"),
        (True, "must be a step number"),
        ([1], "must be a step number"),
    ]:
        with pytest.raises(StepConfigError, match=match) as info:
            wf.run(start_from=bad)
        assert isinstance(info.value, ValueError) and isinstance(info.value, sp.SafepointError)
    assert store.runs.list() == []  # nothing started


def test_numeric_order_step_10_after_step_9(tmp_path: Path, store: sp.Store) -> None:
    source = "import safepoint as sp\n\nclass Training(sp.Steps):\n" + "".join(
        f"    def step_{n}(self, outputs):\n        return list(outputs)\n\n"
        for n in (10, 2, 1, 11, 9)
    )
    wf = make(tmp_path, store, source)
    assert wf.steps() == ["step_1", "step_2", "step_9", "step_10", "step_11"]
    report = wf.run(start_from=10)
    assert report.outputs["step_11"] == ["step_1", "step_2", "step_9", "step_10"]
    assert wf.run(start_from=10).restored == ["step_1", "step_2", "step_9"]
    # a number between steps starts at the next one
    assert wf.run(start_from=3).ran == ["step_9", "step_10", "step_11"]


def test_unsaveable_output_names_step_and_type_and_keeps_earlier(
    tmp_path: Path, store: sp.Store
) -> None:
    bad = PIPELINE.replace(
        "        return [r * 2 for r in rows]", "        return lambda: rows  # not saveable"
    )
    wf = make(tmp_path, store, bad)
    with pytest.raises(StepError, match=r"step_2 returned a function.*cannot save"):
        wf.run()
    assert [s.state for s in wf.status()][:2] == ["cached", "missing"]
    assert store.runs.list(limit=1)[0].status == "failed"
    fixed = make(tmp_path, store)
    report = fixed.run()
    assert report.restored == ["step_1"] and report.ran == ["step_2", "step_3", "step_4"]


def test_failing_step_keeps_its_exception_and_resumes(tmp_path: Path, store: sp.Store) -> None:
    failing = PIPELINE.replace(
        '        return sum(outputs["step_2"])',
        '        raise ValueError("boom")\n        return sum(outputs["step_2"])',
    )
    with pytest.raises(ValueError, match="boom") as info:
        make(tmp_path, store, failing).run()
    assert any("resume at step_3" in note for note in info.value.__notes__)
    run = store.runs.list(limit=1)[0]
    assert run.status == "failed" and "boom" in run.message
    report = make(tmp_path, store).run()
    assert report.restored == ["step_1", "step_2"]
    assert report.ran == ["step_3", "step_4"]


def test_reading_a_later_or_unknown_step_fails_clearly(tmp_path: Path, store: sp.Store) -> None:
    bad = PIPELINE.replace(
        'outputs["step_1"]["rows"]\n        return [', 'outputs["step_3"]\n        return ['
    )
    with pytest.raises(KeyError, match=r"step_2 reads outputs\['step_3'\].*step_1"):
        make(tmp_path, store, bad).run()


@pytest.mark.slow
def test_dataframe_outputs_round_trip(tmp_path: Path, store: sp.Store) -> None:
    source = """
    import numpy as np
    import pandas as pd
    import safepoint as sp

    class Training(sp.Steps):
        def step_1(self, outputs):
            rng = np.random.default_rng(0)
            n = 100_000
            return pd.DataFrame({
                "x": rng.normal(size=n),
                "k": rng.integers(0, 100, n),
                "s": pd.Categorical(rng.choice(["a", "b", "c"], n)),
                "name": np.array(["row%d" % i for i in range(n)], dtype=object),
            })

        def step_2(self, outputs):
            df = outputs["step_1"]
            return df.groupby("s", observed=True)["x"].mean()
    """
    wf = make(tmp_path, store, source)
    first = wf.run()
    df = first.outputs["step_1"]
    loaded = wf.load_outputs()
    pd.testing.assert_frame_equal(loaded["step_1"], df)
    pd.testing.assert_series_equal(loaded["step_2"], first.outputs["step_2"])
    info = store.info("proj/training/v1/step_1")
    assert info.root_type.endswith("DataFrame")
    assert info.digest == first["step_1"].digest


def test_decorator_form(tmp_path: Path, store: sp.Store) -> None:
    source = """
    import safepoint as sp

    def build(store, **kw):
        wf = sp.Workflow("proj/funcs", store=store, params={"n": 4}, **kw)

        @wf.step
        def numbers(outputs, params):
            return list(range(params["n"]))

        @wf.step
        def squares(outputs):
            return [x * x for x in outputs["numbers"]]

        @wf.step(name="total")
        def add_up(outputs):
            return sum(outputs["squares"])

        return wf
    """
    mod = load_module(tmp_path, source)
    wf = mod.build(store)
    assert wf.steps() == ["numbers", "squares", "total"]
    report = wf.run()
    assert report.outputs["total"] == 14
    assert mod.build(store).run().ran == []
    assert mod.build(store).run(start_from="squares").ran == ["squares", "total"]
    assert mod.build(store).run(start_from=3).ran == ["total"]
    assert mod.build(store).load_outputs(["total"]) == {"total": 14}


def test_decorator_order_rules(store: sp.Store) -> None:
    wf = sp.Workflow("proj/ordered", store=store)

    @wf.step(order=2)
    def second(outputs: Any) -> Any:
        return list(outputs)

    @wf.step(order=1)
    def first(outputs: Any) -> Any:
        return 1

    assert wf.steps() == ["first", "second"]
    assert wf.run().outputs["second"] == ["first"]

    mixed = sp.Workflow("proj/mixed", store=store)
    mixed.step(order=1)(first)
    mixed.step(second)
    with pytest.raises(StepConfigError, match="give every step an order"):
        mixed.run()
    with pytest.raises(StepConfigError, match="already has a step"):
        mixed.step(second)


def test_bad_configuration(tmp_path: Path, store: sp.Store) -> None:
    class Empty(sp.Steps):
        pass

    with pytest.raises(StepConfigError, match="has no steps"):
        Empty(name="proj/empty", store=store).run()
    mod = load_module(tmp_path, PIPELINE)
    with pytest.raises(StepConfigError, match="workflow name"):
        mod.Training(name="../escape", store=store)
    with pytest.raises(StepConfigError, match="version"):
        mod.Training(name="proj/x", store=store, version=1.5)
    with pytest.raises(StepConfigError, match="params"):
        mod.Training(name="proj/x", store=store, params=[1, 2])
    with pytest.raises(StepConfigError, match="store must be"):
        mod.Training(name="proj/x", store=42)
    with pytest.raises(StepConfigError, match="not steps of"):
        mod.Training(name="proj/x", store=store).load_outputs(["step_7"])


def test_versions_keep_their_own_outputs_and_seed_argument_names(
    tmp_path: Path, store: sp.Store
) -> None:
    mod = load_module(tmp_path, PIPELINE)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    v1 = mod.Training(name="training", checkpoint_folder=str(folder), version=1)
    v2 = mod.Training(name="training", checkpoint_folder=str(folder), version=2)
    assert v1.run().ran and v2.run().ran
    assert v1.run().ran == [] and v2.run().ran == []
    assert sorted(sp.Store(folder).models()) == sorted(
        f"training/v{v}/step_{i}" for v in (1, 2) for i in range(1, 5)
    )


def test_outputs_are_versions_with_lineage(tmp_path: Path, store: sp.Store) -> None:
    wf = make(tmp_path, store)
    wf.run()
    wf.run(start_from=3)
    versions = store.versions("proj/training/v1/step_3")
    assert [v.version for v in versions] == [1, 2]
    latest = versions[-1]
    assert latest.parents == ["proj/training/v1/step_2@1"]
    assert latest.code_digest is not None and latest.code_digest.startswith("ast:")
    assert latest.run_id == store.runs.list(limit=1)[0].id
    # the output file itself carries no run-specific metadata: identical outputs have
    # identical digests, which is what lets later steps be restored
    assert versions[0].digest == versions[1].digest
    assert np.asarray(store.get("proj/training/v1/step_2")).sum() == 90


# -- one live run per workflow version ---------------------------------------------------
HOLDING = """
import threading
import safepoint as sp

STARTED = threading.Event()
RELEASE = threading.Event()

class Training(sp.Steps):
    def step_1(self, outputs):
        STARTED.set()
        RELEASE.wait(60)
        return 1

    def step_2(self, outputs):
        return outputs["step_1"] + 1
"""


def _check_lock(tmp_path: Path, store: sp.Store) -> None:
    import threading

    mod = load_module(tmp_path, HOLDING)
    holder = mod.Training(name="proj/locked", store=store)
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(holder.run()))
    thread.start()
    try:
        assert mod.STARTED.wait(60)
        other = mod.Training(name="proj/locked", store=store)
        with pytest.raises(StepError, match=r"is being run by run \w+ \(pid \d+"):
            other.run(wait=False)
        with pytest.raises(StepError, match="is being run by"):
            other.run(wait=0.3)
        # status needs no lock
        assert [s.state for s in other.status()] == ["missing", "missing"]
    finally:
        mod.RELEASE.set()
        thread.join(60)
    assert results and results[0].ran == ["step_1", "step_2"]
    assert mod.Training(name="proj/locked", store=store).run(wait=False).ran == []


def test_a_second_run_waits_or_fails_while_one_is_live(tmp_path: Path, store: sp.Store) -> None:
    _check_lock(tmp_path, store)


PG_URL = "postgresql://127.0.0.1:5432/test"


@pytest.fixture
def pg_store(tmp_path: Path) -> Any:
    import uuid

    import sqlalchemy as sa

    eng = sa.create_engine(
        PG_URL.replace("postgresql://", "postgresql+psycopg://", 1),
        connect_args={"connect_timeout": 3},
    )
    try:
        with eng.begin() as c:
            schema = "sp_steps_" + uuid.uuid4().hex[:10]
            c.exec_driver_sql(f"CREATE SCHEMA {schema}")
    except Exception as exc:
        pytest.skip(f"PostgreSQL is not reachable at {PG_URL}: {type(exc).__name__}")
    try:
        yield sp.Store(tmp_path / "blobs", metadata=f"{PG_URL}?options=-csearch_path%3D{schema}")
    finally:
        with eng.begin() as c:
            c.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        eng.dispose()


@pytest.mark.postgres
def test_lock_and_invalidation_on_a_postgresql_catalog(tmp_path: Path, pg_store: Any) -> None:
    _check_lock(tmp_path, pg_store)
    report = make(tmp_path, pg_store).run()
    assert report.ran == ["step_1", "step_2", "step_3", "step_4"]
    changed = PIPELINE.replace("[r * 2 for r in rows]", "[r * 3 for r in rows]")
    report = make(tmp_path, pg_store, changed).run()
    assert reasons(report)["step_3"] == "step_3 reruns: step_2's output changed"
    pg_store.close()


def test_outputs_of_untrusted_types_warn_and_need_trusted(tmp_path: Path, store: sp.Store) -> None:
    source = """
    import safepoint as sp

    class Point:
        def __init__(self, x):
            self.x = x

    class Training(sp.Steps):
        def step_1(self, outputs):
            return Point(3)

        def step_2(self, outputs):
            return outputs["step_1"].x + 1
    """
    # the same script, edited between runs (step_1 uses Point: a new module would be
    # other code)
    with pytest.warns(sp.SafepointWarning, match=r"sp_steps_trust\.Point.*trusted="):
        make(tmp_path, store, source, "sp_steps_trust").run()
    changed = source.replace(".x + 1", ".x + 2")
    with pytest.raises(StepError, match=r"not trusted: sp_steps_trust\.Point.*pass trusted="):
        make(tmp_path, store, changed, "sp_steps_trust").run()
    # trusted by name, the restored output loads
    untrusted = store.inspect("proj/training/v1/step_1").untrusted
    report = make(tmp_path, store, changed, "sp_steps_trust", trusted=untrusted).run()
    assert report.outputs["step_2"] == 5
