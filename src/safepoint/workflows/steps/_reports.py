"""What a run and a status check report: :class:`RunReport`, :class:`WorkflowStatus`."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._plan import Decision

__all__ = ["RunReport", "StepOutcome", "StepStatus", "WorkflowStatus"]


# -- reports ---------------------------------------------------------------------------
@dataclass
class StepOutcome:
    """What a run did with one step."""

    step: str
    action: str  # "ran" | "restored"
    decision: Decision
    version: int | None
    digest: str | None
    seconds: float = 0.0

    @property
    def explanation(self) -> str:
        return self.decision.explain()

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "action": self.action,
            "version": self.version,
            "digest": self.digest,
            "seconds": round(self.seconds, 3),
            **{k: v for k, v in self.decision.to_dict().items() if k != "step"},
        }


@dataclass
class RunReport:
    """The outcome of :meth:`Steps.run`: what ran, what was restored, and why.

    ``outputs`` maps each step to its output; restored outputs are loaded from
    the store on first access.
    """

    workflow: str
    version: str
    run_id: str | None
    steps: list[StepOutcome]
    outputs: Mapping[str, Any] = field(repr=False)

    @property
    def ran(self) -> list[str]:
        return [s.step for s in self.steps if s.action == "ran"]

    @property
    def restored(self) -> list[str]:
        return [s.step for s in self.steps if s.action == "restored"]

    def __getitem__(self, step: str) -> StepOutcome:
        for s in self.steps:
            if s.step == step:
                return s
        raise KeyError(step)

    def to_dict(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "version": self.version,
            "run_id": self.run_id,
            "steps": [s.to_dict() for s in self.steps],
        }

    def __str__(self) -> str:
        head = f"run {self.run_id or '-'} of {self.workflow} v{self.version}"
        return "\n".join([head, *(f"  {s.explanation}" for s in self.steps)])


@dataclass
class StepStatus:
    """The state of one step: ``cached``, ``stale`` or ``missing``, and why."""

    step: str
    state: str
    reasons: list[str]
    notes: list[str]
    explanation: str
    unchecked: list[str] = field(default_factory=list)
    pinned: list[str] = field(default_factory=list)
    version: int | None = None
    digest: str | None = None
    size: int | None = None
    type: str | None = None
    created: Any = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class WorkflowStatus:
    """What :meth:`Steps.status` returns: one :class:`StepStatus` per step, in order."""

    workflow: str
    version: str
    steps: list[StepStatus]
    last_run: dict[str, Any] | None = None
    code_checked: bool = True
    params_checked: bool = True

    def __getitem__(self, step: str) -> StepStatus:
        for s in self.steps:
            if s.step == step:
                return s
        raise KeyError(step)

    def __iter__(self) -> Iterator[StepStatus]:
        return iter(self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "version": self.version,
            "code_checked": self.code_checked,
            "params_checked": self.params_checked,
            "steps": [s.to_dict() for s in self.steps],
            "last_run": self.last_run,
        }

    def __str__(self) -> str:
        lines = [f"workflow {self.workflow} v{self.version}"]
        width = max((len(s.step) for s in self.steps), default=4)
        for s in self.steps:
            parts = list(s.reasons or s.notes)
            if s.pinned:
                parts.append(f"pinned (cache='always') although {'; '.join(s.pinned)}")
            if s.unchecked and not s.reasons:
                parts.append(f"not checked: {'; '.join(s.unchecked)}")
            why = "; ".join(parts)
            ver = f"@{s.version}" if s.version is not None else ""
            lines.append(f"  {s.step:<{width}} {s.state:<8}{ver:<6} {why}".rstrip())
        if not self.code_checked:
            lines.append(
                "  (code not compared: the workflow's code was not given; pass --workflow)"
            )
        if not self.params_checked:
            lines.append("  (parameters not compared: they are known only to the script)")
        if self.last_run:
            r = self.last_run
            state = r.get("status")
            if r.get("alive") is False:
                state = "died while running (the next run resumes it)"
            lines.append(f"  last run {r.get('id')}: {state} {r.get('message', '')}".rstrip())
        return "\n".join(lines)
