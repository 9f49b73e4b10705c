"""The engine under both workflow forms: plan each step, run or restore it, record it
in the store, and report.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ...errors import (
    NotFoundError,
    RunBusyError,
    SafepointError,
    SafepointWarning,
    SerializationError,
    StepConfigError,
    StepError,
    UntrustedTypesError,
)
from ..fingerprint import ABSENT, code_fingerprint, value_digest
from ._code import CodeDeps, step_dependencies
from ._files import FileReads, paused
from ._options import StepOptions
from ._plan import RECORD_SCHEMA, Decision, StoredStep, Upstream, decide
from ._reports import RunReport, StepOutcome, StepStatus, WorkflowStatus
from ._tracking import LazyOutputs, TrackedMapping

if TYPE_CHECKING:
    from ...stores.opening import StoreLike
    from ...stores.store import Store

__all__ = ["RECORD_KEY", "RUN_KIND", "last_run"]

log = logging.getLogger("safepoint.workflows")

_STEP_NAME = re.compile(r"^step_(\d+)$")
_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")
#: the kind of the workflow's rows in the store's runs table
RUN_KIND = "steps"
#: key of the step record in a saved output's metadata
RECORD_KEY = "safepoint.step"


def _type_name(obj: Any) -> str:
    t = type(obj)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


@dataclass(frozen=True)
class _StepDef:
    """One step: its name, number (for ordering and start_from), code and callable."""

    name: str
    number: int
    func: Callable[..., Any]  # what is fingerprinted (the function as written)
    call: Callable[[Mapping[str, Any], Mapping[str, Any]], Any]  # how it is run
    # computed when the steps are listed, at the start of a run: the source is read
    # from disk, and a script edited while a long run goes on must not lend its new
    # code's fingerprint to outputs computed by the old code
    fingerprint: str = ""
    owner: Any = None  # the workflow object of a step method (its ``self``)
    options: StepOptions = field(default_factory=StepOptions)

    def __post_init__(self) -> None:
        if not self.fingerprint:
            object.__setattr__(self, "fingerprint", code_fingerprint(self.func))

    def dependencies(self) -> CodeDeps:
        """What the step's code reaches now (helpers, module values, packages)."""
        try:
            return step_dependencies(self.func, self.owner)
        except Exception as exc:  # user code that resists inspection must not stop a run
            return CodeDeps(unchecked=[f"the code it calls could not be followed ({exc!r})"])


# -- the engine ------------------------------------------------------------------------
def _open_store(store: StoreLike) -> Store:
    from ...errors import InvalidArgumentError
    from ...stores.opening import open_store

    try:
        return open_store(store)
    except InvalidArgumentError as exc:
        raise StepConfigError(str(exc)) from None


def _check_version(version: Any) -> str:
    if isinstance(version, bool) or not isinstance(version, int | str):
        raise StepConfigError(
            f"version must be an int (or a short name), not {type(version).__name__}; "
            "e.g. version=1. Each version keeps its own outputs."
        )
    text = str(version)
    if not _SEGMENT.match(text):
        raise StepConfigError(
            f"version {version!r} is not usable: use an int or letters, digits, '.', '_', '-'"
        )
    return text


class _WorkflowBase:
    """Shared engine of :class:`Steps` (methods) and :class:`Workflow` (functions)."""

    #: seconds between heartbeats of a running workflow in the store's runs table
    heartbeat_interval: float = 10.0
    #: False where the parameters of the run are not known (status from the CLI)
    _params_known: bool = True

    def __init__(
        self,
        name: str,
        store: StoreLike = None,
        version: int | str = 1,
        params: Mapping[str, Any] | None = None,
        *,
        trusted: Any = (),
        checkpoint_folder: str | os.PathLike[str] | None = None,
    ) -> None:
        from ...stores.names import check_name

        if checkpoint_folder is not None:
            if store is not None:
                raise StepConfigError("pass store= or checkpoint_folder= (its old name), not both")
            store = checkpoint_folder
        try:
            self.name = check_name(name, "workflow name")
        except SafepointError as exc:
            raise StepConfigError(str(exc)) from None
        self.version = _check_version(version)
        if params is not None and not (
            isinstance(params, Mapping) and all(isinstance(k, str) for k in params)
        ):
            raise StepConfigError("params must be a dict with str keys, e.g. params={'C': 1.0}")
        self._params: dict[str, Any] = dict(params or {})
        self._active_params: Mapping[str, Any] | None = None
        self.trusted = trusted
        self.store = _open_store(store)

    # -- steps ---------------------------------------------------------------------
    def _step_defs(self) -> list[_StepDef]:  # pragma: no cover - abstract
        raise NotImplementedError

    def steps(self) -> list[str]:
        """The names of the steps, in the order they run."""
        return [s.name for s in self._checked_steps()]

    def _checked_steps(self) -> list[_StepDef]:
        defs = self._step_defs()
        if not defs:
            raise StepConfigError(
                f"workflow {self.name!r} has no steps: define methods step_1(self, outputs), "
                "step_2(...), ... (or register functions with @workflow.step)"
            )
        return defs

    @property
    def params(self) -> Mapping[str, Any]:
        """The workflow's parameters; inside a step, reads are tracked for invalidation."""
        if self._active_params is not None:
            return self._active_params
        return MappingProxyType(self._params)

    def _param_digest(self, key: str) -> str:
        if key not in self._params:
            return ABSENT
        return value_digest(self._params[key])

    # -- names in the store --------------------------------------------------------
    @property
    def prefix(self) -> str:
        """Where outputs live in the store: ``{name}/v{version}``."""
        return f"{self.name}/v{self.version}"

    def _model(self, step: str) -> str:
        return f"{self.prefix}/{step}"

    @property
    def run_name(self) -> str:
        return self.prefix

    def _stored(self, step: str) -> StoredStep | None:
        try:
            mv = self.store.info(self._model(step))
        except NotFoundError:
            return None
        return _stored_step(step, mv)

    def _loader(self, step: str, version: int) -> Callable[[], Any]:
        def load() -> Any:
            try:
                with paused():  # the store's own files are not what the step read
                    return self.store.get(self._model(step), version, trusted=self.trusted)
            except UntrustedTypesError as exc:
                raise StepError(
                    f"the saved output of {step} holds types that are not trusted: "
                    f"{', '.join(exc.types)}. If they are your own classes, pass "
                    f"trusted={exc.types!r} to the workflow (nothing was imported)."
                ) from exc
            except SafepointError as exc:
                raise StepError(
                    f"the saved output of {step} ({self._model(step)}@{version}) cannot be "
                    f"loaded: {exc}. Rerun it with run(start_from={step!r})."
                ) from exc

        return load

    # -- start_from ----------------------------------------------------------------
    def _force_index(self, defs: list[_StepDef], start_from: Any) -> int | None:
        if start_from is None:
            return None
        numbers = [d.number for d in defs]
        names = [d.name for d in defs]
        if isinstance(start_from, bool) or not isinstance(start_from, int | str):
            raise StepConfigError(
                f"start_from must be a step number (int) or name, not "
                f"{type(start_from).__name__}; the steps are {', '.join(names)}"
            )
        if isinstance(start_from, str):
            if start_from in names:
                return names.index(start_from)
            raise StepConfigError(
                f"start_from={start_from!r} is not a step of {self.name!r}; "
                f"the steps are {', '.join(names)}"
            )
        if start_from > numbers[-1]:
            raise StepConfigError(
                f"start_from={start_from} is beyond the last step ({names[-1]}); "
                f"use a number from {numbers[0]} to {numbers[-1]}"
            )
        if start_from < numbers[0]:
            raise StepConfigError(
                f"start_from={start_from} is before the first step ({names[0]}); "
                f"use a number from {numbers[0]} to {numbers[-1]}"
            )
        return next(i for i, n in enumerate(numbers) if n >= start_from)

    # -- planning --------------------------------------------------------------------
    def _plan_one(
        self,
        d: _StepDef | None,
        name: str,
        stored: StoredStep | None,
        upstream: Mapping[str, Upstream],
        forced_by: str | None,
        deps: CodeDeps | None = None,
    ) -> Decision:
        return decide(
            name,
            stored,
            code=d.fingerprint if d is not None else None,
            param_digest=self._param_digest if self._params_known else None,
            upstream=upstream,
            forced_by=forced_by,
            deps=deps,
            cache=d.options.cache if d is not None else "auto",
        )

    def status(self) -> WorkflowStatus:
        """For each step: ``cached``, ``stale`` or ``missing``, and why (reads no output data).

        Example:
            >>> print(training.status())            # doctest: +SKIP
            workflow model-training v1
              step_1 cached  @1
              step_2 stale   @1    its code changed
              step_3 stale   @1    it reads step_2, which will rerun (its code changed)
        """
        defs = self._checked_steps()
        return self._status(defs, {d.name: d for d in defs})

    def _status(
        self, defs: list[_StepDef] | list[str], by_name: Mapping[str, _StepDef]
    ) -> WorkflowStatus:
        upstream: dict[str, Upstream] = {}
        out = []
        for d in defs:
            name = d if isinstance(d, str) else d.name
            stored = self._stored(name)
            code = by_name.get(name)
            deps = code.dependencies() if code is not None else None
            dec = self._plan_one(code, name, stored, upstream, None, deps)
            if dec.rerun or stored is None:
                upstream[name] = Upstream(None, None, why="; ".join(dec.reasons))
            else:
                upstream[name] = Upstream(stored.digest, stored.version, forced=stored.forced)
            out.append(
                StepStatus(
                    step=name,
                    state=dec.state,
                    reasons=dec.reasons,
                    notes=dec.notes,
                    explanation=dec.explain(),
                    unchecked=dec.unchecked,
                    pinned=dec.pinned,
                    version=stored.version if stored else None,
                    digest=stored.digest if stored else None,
                    size=stored.size if stored else None,
                    type=stored.type if stored else None,
                    created=stored.created if stored else None,
                )
            )
        return WorkflowStatus(
            workflow=self.name,
            version=self.version,
            steps=out,
            last_run=self._last_run(),
            code_checked=bool(by_name),
            params_checked=self._params_known,
        )

    def _last_run(self) -> dict[str, Any] | None:
        return last_run(self.store, self.run_name)

    # -- running ---------------------------------------------------------------------
    def run(
        self,
        start_from: int | str | None = None,
        *,
        verbose: bool = False,
        wait: bool | float = True,
    ) -> RunReport:
        """Run the steps in order, restoring those whose saved output is still valid.

        Args:
            start_from: force a rerun from this step on (its number, or its name);
                earlier steps are restored when valid, as always.
            verbose: print one line per step (it is also logged to
                ``logging.getLogger("safepoint.workflows")`` at INFO).
            wait: when another live run of this workflow version holds it: wait
                for it (True), fail at once (False), or wait at most this many
                seconds. A run whose process died is taken over at once.

        Returns:
            a :class:`RunReport` (which steps ran, which were restored, and why).

        Raises:
            StepConfigError: ``start_from`` is not a step (not an int or name, or
                beyond the last step).
            StepError: a step returned something safepoint cannot save (the step
                and the type are named; earlier outputs stay saved), or another
                run of the same workflow holds the lock.

        Example:
            >>> report = training.run()                  # doctest: +SKIP
            >>> report.ran, report.restored              # doctest: +SKIP
            (['step_3'], ['step_1', 'step_2'])
        """
        defs = self._checked_steps()
        force_at = self._force_index(defs, start_from)
        say = _Say(verbose)
        # what each step's code reaches, taken before any step runs: a helper edited
        # while a long run goes on must not lend its fingerprint to the old code's output
        deps = {d.name: d.dependencies() for d in defs}
        with self._exclusive(wait, say) as run:
            outputs = LazyOutputs()
            upstream: dict[str, Upstream] = {}
            outcomes: list[StepOutcome] = []
            n = len(defs)
            names = [d.name for d in defs]
            try:
                for i, d in enumerate(defs):
                    forced_by = None
                    if force_at is not None and i >= force_at:
                        forced_by = f"forced by start_from={start_from!r}"
                    stored = self._stored(d.name)
                    dec = self._plan_one(d, d.name, stored, upstream, forced_by, deps[d.name])
                    say(dec.explain())
                    if not dec.rerun and stored is not None:
                        outputs.set_loader(d.name, self._loader(d.name, stored.version))
                        upstream[d.name] = Upstream(
                            stored.digest, stored.version, forced=stored.forced
                        )
                        outcomes.append(
                            StepOutcome(d.name, "restored", dec, stored.version, stored.digest)
                        )
                        continue
                    self._progress(run, i, n, outcomes, d.name)
                    outcome, value = self._run_step(
                        d, i, names, outputs, dec, run, upstream, deps[d.name]
                    )
                    outputs.set_value(d.name, value)
                    upstream[d.name] = Upstream(
                        outcome.digest, outcome.version, forced=dec.state == "forced", reran=True
                    )
                    outcomes.append(outcome)
            except BaseException as exc:
                self._finish(run, outcomes, exc)
                raise
            self._progress(run, n, n, outcomes, None)
            self._finish(run, outcomes, None)
            run_id = run.id
        return RunReport(self.name, self.version, run_id, outcomes, outputs)

    def _run_step(
        self,
        d: _StepDef,
        index: int,
        names: list[str],
        outputs: LazyOutputs,
        dec: Decision,
        run: Any,
        upstream: Mapping[str, Upstream],
        deps: CodeDeps,
    ) -> tuple[StepOutcome, Any]:
        seen_outputs = TrackedMapping(outputs.view(names[:index]), what="outputs", owner=d.name)
        seen_params = TrackedMapping(self._params, what="params", owner=d.name)
        t0 = time.perf_counter()
        self._active_params = seen_params
        reads = FileReads(exclude=self._store_folders())
        try:
            with self._heartbeat(run), reads:
                value = d.call(seen_outputs, seen_params)
        except BaseException as exc:
            if isinstance(exc, Exception):
                exc.add_note(
                    f"safepoint: {d.name} of workflow {self.name!r} v{self.version} failed; the "
                    "outputs of the steps before it are saved: fix it and run() again to "
                    f"resume at {d.name}"
                )
            raise
        finally:
            self._active_params = None
        seconds = time.perf_counter() - t0
        record: dict[str, Any] = {
            "schema": RECORD_SCHEMA,
            "workflow": self.name,
            "workflow_version": self.version,
            "step": d.name,
            "index": index,
            "steps": names,
            "code": d.fingerprint,
            "params": {k: self._param_digest(k) for k in sorted(seen_params.read)},
            "inputs": {},
            "deps": deps.to_record(),
            "files": reads.records(),
            "io_unchecked": reads.unchecked(),
            "cache": d.options.cache,
            "forced": dec.state == "forced",
            "run_id": run.id,
            "seconds": round(seconds, 6),
            "type": _type_name(value),
            "reason": dec.explain(),
        }
        for key in names[:index]:
            up = upstream.get(key)
            if key in seen_outputs.read and up is not None:
                record["inputs"][key] = {"digest": up.digest, "version": up.version}
        try:
            mv = self._put(d.name, value, record, run.id)
        except SerializationError as exc:
            raise StepError(
                f"{d.name} returned a {_type_name(value)}, which safepoint cannot save: {exc}. "
                "Return arrays, DataFrames, estimators or containers of them (classes from "
                "an importable module, not __main__). The outputs of the earlier steps are "
                "saved; the next run resumes at this step."
            ) from exc
        self._warn_untrusted(d.name, mv)
        return StepOutcome(d.name, "ran", dec, mv.version, mv.digest, seconds), value

    def _store_folders(self) -> tuple[str, ...]:
        """Folders of the store's own files (never inputs of a step)."""
        root = getattr(self.store.blobs, "root", None)
        return (root,) if isinstance(root, str) else ()

    def _warn_untrusted(self, step: str, mv: Any) -> None:
        """Say now, not at the next restore, that loading this output needs ``trusted=``."""
        if not getattr(self.store.blobs, "is_local", False):
            return  # inspecting a remote blob means downloading it
        try:
            untrusted = self.store.inspect(mv.ref, trusted=self.trusted).untrusted
        except SafepointError:
            return
        if untrusted:
            warnings.warn(
                SafepointWarning(
                    f"the output of {step} holds types outside the trust set: "
                    f"{', '.join(untrusted)}; restoring it will need "
                    f"trusted={sorted(untrusted)!r} on the workflow"
                ),
                stacklevel=4,
            )

    def _put(self, step: str, value: Any, record: dict[str, Any], run_id: str | None) -> Any:
        # The record goes to catalog-only fields: the store also writes put(metadata=)
        # into the file's manifest, whose digest is the output's identity; a record
        # there (code, run id, timings) would make every rerun look like a changed output.
        parents = [f"{self._model(k)}@{v['version']}" for k, v in record["inputs"].items()]
        return self.store.put(
            self._model(step),
            value,
            tags={RECORD_KEY: json.dumps(record, separators=(",", ":"), sort_keys=True)},
            code_digest=record["code"],
            parents=parents,
            run_id=run_id,
        )

    # -- runs table and lock ---------------------------------------------------------
    @contextlib.contextmanager
    def _exclusive(self, wait: bool | float, say: _Say) -> Iterator[Any]:
        """Hold the workflow (one live run per workflow version) for the duration."""
        from ...stores.runs import STALE_AFTER

        deadline = None
        if wait is not True:
            deadline = time.monotonic() + (0.0 if wait is False else float(wait))
        told = False
        state = {"workflow": self.name, "version": self.version, "steps": []}
        while True:
            try:
                run = self.store.runs.start(
                    RUN_KIND,
                    self.run_name,
                    state,
                    exclusive=True,
                    stale_after=max(STALE_AFTER, 6 * self.heartbeat_interval),
                )
                break
            except RunBusyError as busy:
                holder: Any = busy.holder  # the RunInfo of the live run
            if deadline is not None and time.monotonic() >= deadline:
                raise StepError(
                    f"workflow {self.name!r} v{self.version} is being run by "
                    f"{holder.describe()}; wait for it to finish (run(wait=True) waits), "
                    "or use another version"
                )
            if not told:
                say(f"waiting for {holder.describe()} of the same workflow to finish")
                told = True
            time.sleep(0.2)
        for old in run.taken_over:
            say(f"run {old} of this workflow died before it finished; resuming where it stopped")
        try:
            yield run
        finally:
            run.release()

    def _heartbeat(self, run: Any) -> contextlib.AbstractContextManager[Any]:
        return run.keepalive(self.heartbeat_interval)

    def _progress(
        self,
        run: Any,
        done: int,
        total: int,
        outcomes: list[StepOutcome],
        current: str | None,
    ) -> None:
        run.update(
            progress=done / total,
            message=f"running {current}" if current else f"{done}/{total} steps",
            state={
                "current": current,
                "steps": [o.to_dict() for o in outcomes],
            },
        )

    def _finish(self, run: Any, outcomes: list[StepOutcome], exc: BaseException | None) -> None:
        if exc is None:
            ran = sum(o.action == "ran" for o in outcomes)
            status, message = "succeeded", f"{ran} ran, {len(outcomes) - ran} restored"
        elif isinstance(exc, KeyboardInterrupt):
            status, message = "interrupted", "KeyboardInterrupt"
        else:
            status, message = "failed", f"{type(exc).__name__}: {exc}"[:1000]
        # the run's outcome must not hide the step's own exception
        with contextlib.suppress(SafepointError):
            run.finish(status, message)

    # -- notebooks -------------------------------------------------------------------
    def load_outputs(self, steps: list[str] | None = None) -> dict[str, Any]:
        """Load the saved outputs: a dict of step name -> output, in step order.

        Steps that have no saved output yet are left out. Loading a file never
        runs code (types outside the default trust set need ``trusted=`` on the
        workflow).

        Example:
            >>> training = Training(name="model-training", store="./store")  # doctest: +SKIP
            >>> model = training.load_outputs()["step_3"]                    # doctest: +SKIP
        """
        names = self.steps()
        if steps is not None:
            unknown = [s for s in steps if s not in names]
            if unknown:
                raise StepConfigError(
                    f"not steps of {self.name!r}: {', '.join(map(str, unknown))}; "
                    f"the steps are {', '.join(names)}"
                )
            names = [n for n in names if n in steps]
        result = {}
        for name in names:
            stored = self._stored(name)
            if stored is not None:
                result[name] = self._loader(name, stored.version)()
        return result

    def export_outputs(
        self,
        folder: str | os.PathLike[str],
        *,
        format: str = "sp",
        steps: list[str] | None = None,
        overwrite: bool = False,
    ) -> list[dict[str, Any]]:
        """Write each step's saved output into ``folder`` as a file of its own.

        ``format="sp"`` (the default) writes the safepoint files themselves
        (``step_1.sp``: ``sp.load`` reads them anywhere, without the store);
        ``"pickle"`` or ``"joblib"`` writes pickles, with a warning (loading a
        pickle runs code). See :func:`safepoint.workflows.steps.export_outputs`.

        Example:
            >>> training.export_outputs("exported/")         # doctest: +SKIP
            [{'step': 'step_1', 'path': 'exported/step_1.sp', ...}, ...]
        """
        from ._export import export_outputs

        return export_outputs(
            self.store,
            self.name,
            folder,
            self.version,
            format=format,
            steps=steps,
            trusted=self.trusted,
            overwrite=overwrite,
        )


def last_run(store: Store, run_name: str) -> dict[str, Any] | None:
    """The newest row of the runs table for a workflow version (a dict), or None."""
    found = store.runs.list(kind=RUN_KIND, name=run_name, limit=1)
    if not found:
        return None
    run = found[0]
    info = run.to_dict()
    info.pop("state", None)  # the per-step log is long; status() shows the steps itself
    if run.status == "running":
        info["alive"] = run.alive
    return info


class _Say:
    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose

    def __call__(self, line: str) -> None:
        log.info(line)
        if self.verbose:
            print(line, flush=True)


def _stored_step(step: str, mv: Any) -> StoredStep:
    """The catalog's view of a saved output (a :class:`ModelVersion`) as a StoredStep."""
    raw = (mv.tags or {}).get(RECORD_KEY)
    try:
        record = json.loads(raw) if raw else {}
    except ValueError:
        record = {}
    return StoredStep(
        name=step,
        version=mv.version,
        digest=mv.digest,
        size=mv.size,
        created=mv.created,
        record=record if isinstance(record, dict) else {},
    )
