"""Resumable step workflows: the successor of the ``step_1 ... step_N`` checkpoint scripts.

Split a long training script into steps; each step's output is saved in the
store (safepoint format, versioned, atomic), and the next run restores what is
still valid instead of recomputing it::

    import safepoint as sp

    class Training(sp.Steps):
        def step_1(self, outputs):
            return load_and_clean()                    # e.g. a DataFrame

        def step_2(self, outputs):
            return add_features(outputs["step_1"])

        def step_3(self, outputs):
            model = LogisticRegression(C=self.params["C"])
            return model.fit(outputs["step_2"])

    training = Training(name="model-training", store="./store", version=1, params={"C": 1.0})
    training.run()                 # runs 1, 2, 3
    training.run()                 # restores all: nothing changed
    training.run(start_from=2)     # restores step_1, reruns 2 and 3
    training.status()              # cached / stale / missing for each step, and why
    outputs = training.load_outputs()   # in a notebook: {"step_1": ..., "step_3": model}

A step reruns by itself when it would compute something different:

* its code changed (the normalised source of the method: comments, formatting
  and docstrings do not count), or code it reaches in the user's own modules:
  helper functions and classes it calls, transitively, and the module-level
  values they read (``helpers.scale changed``); or the version of an installed
  package it uses;
* a parameter it read (``self.params[...]``) changed;
* the output of an earlier step that it read (``outputs[...]``) changed;
* a file it read while it ran changed (``data.csv changed: 1.2 kB -> 1.5 kB``).

Reads are tracked, so a step that never looks at ``step_1`` does not rerun when
step_1 changes, and a step whose input was recomputed to the identical result
is restored. What cannot be compared (a network read, compiled code) is named in
the explanation instead of being called unchanged. ``@sp.step(cache="always")``
pins a step's saved output, ``cache="never"`` reruns it every time. Digests of
outputs are computed while writing and compared from the catalog, never
recomputed from the data. Steps run in numeric order (step_10
after step_9). A run killed at any instant resumes at the step it was in: the
store never shows a half-written output.

The decorator form does the same for plain functions::

    wf = sp.Workflow("model-training", store="./store")

    @wf.step
    def clean(outputs):
        return load_and_clean()

    @wf.step
    def train(outputs, params):
        return fit(outputs["clean"], C=params["C"])

    wf.run()

Limits (see docs/steps.md): code reached by a computed name (``getattr``,
``eval``), environment variables, the clock and randomness are not tracked, nor
files read by native code without Python's ``open`` or in other threads and
processes; put what should invalidate a step into ``params``, or force it with
``start_from``.

Inside the package: ``_api`` (:class:`Steps`, :class:`Workflow`), ``_engine`` (plan,
run or restore, record), ``_reports``, ``_saved`` (the CLI's and console's view of a
saved run), ``_plan`` (the rerun decision), ``_code`` and ``_files`` (what a step's code
and file reads depend on), ``_tracking``, ``_options`` (``@sp.step``) and ``_export``.
"""

from __future__ import annotations

from ._api import Steps, Workflow
from ._engine import RECORD_KEY, RUN_KIND, last_run
from ._export import PICKLE_WARNING, FilesExistError, export_outputs
from ._options import step
from ._reports import RunReport, StepOutcome, StepStatus, WorkflowStatus
from ._saved import saved_outputs, saved_status

__all__ = [
    "PICKLE_WARNING",
    "RECORD_KEY",
    "RUN_KIND",
    "FilesExistError",
    "RunReport",
    "StepOutcome",
    "StepStatus",
    "Steps",
    "Workflow",
    "WorkflowStatus",
    "export_outputs",
    "last_run",
    "saved_outputs",
    "saved_status",
    "step",
]
