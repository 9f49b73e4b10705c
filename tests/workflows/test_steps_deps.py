"""Steps see the code they reach and the files they read: helpers, constants, classes,
data files, what cannot be checked, and pinned steps.

The workflow script and its helper module are real files in a folder on ``sys.path``,
imported under the same names after every edit (as a user re-running a script
would), so that ``helpers.scale`` is named as the user wrote it.
"""

from __future__ import annotations

import http.server
import importlib
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import safepoint as sp
from safepoint.workflows.steps._code import CodeDeps
from safepoint.workflows.steps._plan import RECORD_SCHEMA, StoredStep, decide

HELPERS = """
import numpy as np

FACTOR = 2.0


def scale(x):
    return np.asarray(x, dtype=float) * FACTOR


class Doubler:
    def apply(self, values):
        return [v * 2 for v in values]
"""

WORKFLOW = """
import helpers
from helpers import Doubler

import safepoint as sp


class Training(sp.Steps):
    threshold = 0.5

    def step_1(self, outputs):
        with open("data.csv") as fh:
            return [float(v) for v in fh.read().split(",")]

    def step_2(self, outputs):
        return helpers.scale(outputs["step_1"])

    def step_3(self, outputs):
        return Doubler().apply([1, 2]) + [self.limit()]

    def step_4(self, outputs):
        return len(outputs["step_1"])

    def limit(self):
        return self.threshold
"""


class Project:
    """A folder with ``wfmod.py`` and ``helpers.py``, importable, edited between runs."""

    def __init__(self, folder: Path, store: sp.Store) -> None:
        self.folder, self.store = folder, store
        self.write("helpers.py", HELPERS)
        self.write("wfmod.py", WORKFLOW)
        self.data([1.5] * 300)

    def write(self, name: str, text: str) -> None:
        (self.folder / name).write_text(textwrap.dedent(text))

    def edit(self, name: str, old: str, new: str) -> None:
        path = self.folder / name
        text = path.read_text()
        assert old in text, old
        path.write_text(text.replace(old, new))

    def data(self, values: list[float]) -> None:
        (self.folder / "data.csv").write_text(",".join(f"{v:.1f}" for v in values))

    def workflow(self, **kw: Any) -> Any:
        for name in ("wfmod", "helpers"):
            sys.modules.pop(name, None)
        importlib.invalidate_caches()
        mod = importlib.import_module("wfmod")
        return mod.Training(name="proj/deps", store=self.store, **kw)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    # edits within one second keep the size: no stale bytecode may stand in for them
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    yield Project(tmp_path, sp.Store(tmp_path / "store"))
    for name in ("wfmod", "helpers", "fastmod"):
        sys.modules.pop(name, None)


def states(status: Any) -> dict[str, str]:
    return {s.step: s.state for s in status}


def test_a_changed_helper_function_reruns_the_step_that_calls_it(project: Project) -> None:
    assert project.workflow().run().ran == ["step_1", "step_2", "step_3", "step_4"]
    project.edit("helpers.py", "* FACTOR", "* FACTOR + 1")
    wf = project.workflow()
    status = wf.status()
    assert states(status) == {"step_1": "cached", "step_2": "stale", "step_3": "cached",
                              "step_4": "cached"}  # fmt: skip
    assert status["step_2"].reasons == ["helpers.scale changed"]
    assert "helpers.scale changed" in str(status)
    report = wf.run()
    assert report.ran == ["step_2"]
    assert report["step_2"].explanation == "step_2 reruns: helpers.scale changed"
    np.testing.assert_array_equal(report.outputs["step_2"], np.full(300, 4.0))
    # comments, blank lines and docstrings in a helper change nothing
    project.edit("helpers.py", "def scale(x):\n", 'def scale(x):\n    """Scale."""\n    # x\n')
    assert project.workflow().run().ran == []


def test_a_changed_module_constant_and_class(project: Project) -> None:
    project.workflow().run()
    project.edit("helpers.py", "FACTOR = 2.0", "FACTOR = 3.0")
    project.edit("helpers.py", "v * 2 for v", "v * 3 for v")
    report = project.workflow().run()
    assert report.ran == ["step_2", "step_3"]
    assert report["step_2"].explanation == "step_2 reruns: helpers.FACTOR changed"
    assert report["step_3"].explanation == "step_3 reruns: helpers.Doubler changed"
    assert report.outputs["step_3"] == [3, 6, 0.5]


def test_methods_and_attributes_of_the_workflow_itself(project: Project) -> None:
    project.workflow().run()
    project.edit("wfmod.py", "threshold = 0.5", "threshold = 0.25")
    report = project.workflow().run()
    assert report.ran == ["step_3"]
    assert report["step_3"].explanation == "step_3 reruns: wfmod.Training.threshold changed"
    project.edit("wfmod.py", "return self.threshold", "return self.threshold * 2")
    report = project.workflow().run()
    assert report["step_3"].explanation == "step_3 reruns: wfmod.Training.limit changed"
    assert report.outputs["step_3"] == [2, 4, 0.5]


def test_an_import_inside_the_step_is_followed(project: Project) -> None:
    project.edit(
        "wfmod.py",
        'return helpers.scale(outputs["step_1"])',
        'from helpers import scale\n        return scale(outputs["step_1"])',
    )
    project.workflow().run()
    project.edit("helpers.py", "* FACTOR", "* FACTOR * 10")
    report = project.workflow().run()
    assert report["step_2"].explanation == "step_2 reruns: helpers.scale changed"


def test_a_changed_data_file_reruns_the_step_and_those_that_read_its_output(
    project: Project,
) -> None:
    assert (project.folder / "data.csv").stat().st_size == 1199
    wf = project.workflow()
    first = wf.run()
    record = project.store.info("proj/deps/v1/step_1").tags["safepoint.step"]
    assert '"path"' in record and "data.csv" in record
    # touched, same content: restored, and the note says so
    (project.folder / "data.csv").write_text((project.folder / "data.csv").read_text())
    again = project.workflow().run()
    assert again.ran == []
    assert "data.csv was touched but its content is unchanged" in again["step_1"].explanation
    project.data([1.5] * 375)  # 1,199 -> 1,499 bytes
    status = project.workflow().status()
    assert status["step_1"].reasons == ["data.csv changed: 1.2 kB -> 1.5 kB"]
    assert status["step_2"].reasons == [
        "it reads step_1, which will rerun (data.csv changed: 1.2 kB -> 1.5 kB)"
    ]
    assert status["step_3"].state == "cached"
    report = project.workflow().run()
    assert report.ran == ["step_1", "step_2", "step_4"]
    assert report["step_2"].explanation == "step_2 reruns: step_1's output changed"
    assert report.outputs["step_4"] == 375 and first.outputs["step_4"] == 300
    # same size, other content
    project.data([2.5] * 375)
    assert project.workflow().status()["step_1"].reasons == [
        "data.csv changed: same size (1.5 kB), other content"
    ]
    (project.folder / "data.csv").unlink()
    assert project.workflow().status()["step_1"].reasons == ["data.csv was removed"]


def test_files_the_step_wrote_and_the_store_are_not_inputs(project: Project) -> None:
    project.edit(
        "wfmod.py",
        '    def step_4(self, outputs):\n        return len(outputs["step_1"])',
        "    def step_4(self, outputs):\n"
        '        with open("scratch.txt", "w") as fh:\n'
        '            fh.write("x")\n'
        '        with open("scratch.txt") as fh:\n'
        "            fh.read()\n"
        '        return len(outputs["step_1"])',
    )
    wf = project.workflow()
    wf.run()
    wf.run(start_from=4)  # step_1's output is loaded from the store inside step_4
    record = project.store.info("proj/deps/v1/step_4").tags["safepoint.step"]
    assert "scratch.txt" not in record and "blobs" not in record
    (project.folder / "scratch.txt").write_text("changed")
    assert project.workflow().run().ran == []


def test_what_cannot_be_checked_is_said(project: Project) -> None:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the http.server API
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"0.5")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/rate"
    try:
        project.edit(
            "wfmod.py",
            "    def step_4(self, outputs):\n",
            "    def step_4(self, outputs):\n"
            "        import urllib.request\n"
            f"        rate = float(urllib.request.urlopen({url!r}).read())\n",
        )
        project.workflow().run()
    finally:
        server.shutdown()
        server.server_close()
    status = project.workflow().status()
    step = status["step_4"]
    assert step.state == "cached"
    assert f"a URL it fetched ({url})" in step.unchecked
    assert "not checked: " in step.explanation and url in step.explanation
    # the other steps read no network: nothing said
    assert status["step_1"].unchecked == []
    assert "not checked" not in status["step_1"].explanation


def _build_extension(folder: Path, body: str) -> None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build an extension module")
    source = folder / "fastmod.c"
    source.write_text(
        textwrap.dedent(
            f"""
            #include <Python.h>
            static PyObject* add(PyObject* self, PyObject* args) {{
                long a, b;
                if (!PyArg_ParseTuple(args, "ll", &a, &b)) return NULL;
                return PyLong_FromLong({body});
            }}
            static PyMethodDef methods[] = {{{{"add", add, METH_VARARGS, ""}},
                                             {{NULL, NULL, 0, NULL}}}};
            static struct PyModuleDef mod = {{PyModuleDef_HEAD_INIT, "fastmod", "", -1, methods}};
            PyMODINIT_FUNC PyInit_fastmod(void) {{ return PyModule_Create(&mod); }}
            """
        )
    )
    target = folder / f"fastmod{sysconfig.get_config_var('EXT_SUFFIX')}"
    built = folder / "fastmod.build"
    include = sysconfig.get_paths()["include"]
    subprocess.run(
        [cc, "-shared", "-fPIC", f"-I{include}", str(source), "-o", str(built)],
        check=True,
        capture_output=True,
    )
    # a new file, not one rewritten in place: this process may have the old one mapped
    built.replace(target)


def test_compiled_code_of_the_user_is_compared_by_file_and_said_so(project: Project) -> None:
    _build_extension(project.folder, "a + b")
    project.edit(
        "wfmod.py",
        "import helpers\n",
        "import helpers\nimport fastmod\n",
    )
    project.edit(
        "wfmod.py",
        'return len(outputs["step_1"])',
        'return fastmod.add(len(outputs["step_1"]), 1)',
    )
    assert project.workflow().run().outputs["step_4"] == 301
    status = project.workflow().status()
    assert status["step_4"].state == "cached"
    explanation = status["step_4"].explanation
    assert "not checked: fastmod: compiled code" in explanation
    assert status["step_1"].unchecked == []
    # a rebuilt extension is another file: the step reruns (in a new process, where the
    # new build is what gets imported; here the check alone is shown)
    sys.modules.pop("fastmod", None)
    _build_extension(project.folder, "a + b + 1")
    assert project.workflow().status()["step_4"].reasons == ["fastmod (file) changed"]


def test_pinned_and_never_cached_steps(project: Project) -> None:
    project.edit(
        "wfmod.py",
        "    def step_2(self, outputs):",
        '    @sp.step(cache="always")\n    def step_2(self, outputs):',
    )
    project.edit(
        "wfmod.py",
        "    def step_3(self, outputs):",
        '    @sp.step(cache="never")\n    def step_3(self, outputs):',
    )
    first = project.workflow().run()
    assert first.ran == ["step_1", "step_2", "step_3", "step_4"]
    project.edit("helpers.py", "* FACTOR", "* FACTOR + 1")
    report = project.workflow().run()
    assert report.ran == ["step_3"]
    assert report["step_2"].explanation == (
        "step_2 is restored: pinned with cache='always', although helpers.scale changed"
    )
    assert report["step_3"].explanation == "step_3 reruns: cache='never': it reruns at every run"
    # start_from still reruns a pinned step
    assert "step_2" in project.workflow().run(start_from=2).ran
    with pytest.raises(sp.StepConfigError, match="cache='sometimes' is not one of"):
        sp.step(cache="sometimes")


def test_decorator_form_follows_closures_and_takes_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = sp.Store(tmp_path / "store")

    def build(offset: int) -> sp.Workflow:
        wf = sp.Workflow("proj/funcs", store=store)

        @wf.step
        def base(outputs: Any) -> int:
            return 10 + offset

        @wf.step(cache="always")
        def pinned(outputs: Any) -> int:
            return outputs["base"] + offset

        return wf

    assert build(1).run().ran == ["base", "pinned"]
    assert build(1).run().ran == []
    report = build(2).run()
    assert report.ran == ["base"]
    (reason,) = report["base"].decision.reasons
    assert reason.endswith("build.<locals>.base.offset changed"), reason
    assert report["pinned"].explanation.startswith(
        "pinned is restored: pinned with cache='always', although "
    )
    assert report.outputs["pinned"] == 12  # the pinned output, computed with offset 1


# -- decisions ---------------------------------------------------------------------------
def test_decide_names_changed_packages_and_new_dependencies() -> None:
    record = {
        "schema": RECORD_SCHEMA,
        "code": "c",
        "params": {},
        "inputs": {},
        "deps": {"code": {"helpers.scale": "a"}, "packages": {"numpy": "1.26.4"}},
    }
    stored = StoredStep("step_1", 1, "d", 1, None, record)
    deps = CodeDeps(code={"helpers.scale": "a"}, packages={"numpy": "2.1.0"})
    dec = decide("step_1", stored, code="c", param_digest=lambda k: "x", upstream={}, deps=deps)
    assert dec.reasons == ["numpy changed: 1.26.4 -> 2.1.0"]
    deps = CodeDeps(code={"helpers.scale": "a", "helpers.clip": "b"}, packages={"numpy": "1.26.4"})
    dec = decide("step_1", stored, code="c", param_digest=lambda k: "x", upstream={}, deps=deps)
    assert dec.reasons == ["it now uses helpers.clip"]
    same = CodeDeps(code={"helpers.scale": "a"}, packages={"numpy": "1.26.4"}, unchecked=["x: y"])
    dec = decide("step_1", stored, code="c", param_digest=lambda k: "x", upstream={}, deps=same)
    assert dec.state == "cached"
    assert dec.explain() == (
        "step_1 is restored: code, parameters and inputs unchanged; not checked: x: y"
    )


def test_decide_without_the_code_says_what_was_not_compared() -> None:
    record = {"schema": RECORD_SCHEMA, "code": "c", "params": {"C": "p"}, "inputs": {}}
    stored = StoredStep("step_1", 1, "d", 1, None, record)
    dec = decide("step_1", stored, code=None, param_digest=None, upstream={})
    assert dec.state == "cached"
    assert dec.explain() == (
        "step_1 is restored: inputs unchanged; code and parameters not compared"
    )
    old = StoredStep("step_1", 1, "d", 1, None, {**record, "schema": 1})
    dec = decide("step_1", old, code="c", param_digest=None, upstream={})
    assert "records the helpers it calls and the files it reads" in dec.reasons[0]


def test_file_reads_keep_inputs_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safepoint.workflows.steps import _files as step_files
    from safepoint.workflows.steps._files import FileReads

    data = [tmp_path / f"in{i}.txt" for i in range(3)]
    for p in data:
        p.write_text("x")
    scratch = tmp_path / "scratch.txt"
    outside = tmp_path / "outside.txt"
    outside.write_text("y")
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "blob").write_bytes(b"b")
    with FileReads(exclude=(str(tmp_path / "store"),)) as reads:
        for p in data:
            p.read_text()
        scratch.write_text("tmp")  # written by the step: not an input, even read back
        scratch.read_text()
        open("/proc/self/status").close()  # made up by the kernel at each read
        (tmp_path / "store" / "blob").read_bytes()  # the store's own files
    outside.read_text()  # after the step: not recorded
    paths = [r["path"] for r in reads.records()]
    assert paths == [str(p.resolve()) for p in data]
    assert reads.unchecked() == []
    # a step reading thousands of files: the first ones are compared, the rest counted
    monkeypatch.setattr(step_files, "MAX_FILES", 2)
    assert len(reads.records()) == 2
    assert reads.unchecked() == ["1 more files it read (only the first 2 are compared)"]


def test_a_pinned_step_stays_pinned_across_the_record_upgrade() -> None:
    record = {"schema": 1, "code": "c", "params": {}, "inputs": {}}
    stored = StoredStep("step_1", 1, "d", 1, None, record)
    dec = decide("step_1", stored, code="c", param_digest=None, upstream={}, cache="always")
    assert dec.state == "cached" and "layout 1" in dec.explain()
    assert decide("step_1", stored, code="c", param_digest=None, upstream={}).state == "stale"
