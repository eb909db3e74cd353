"""The step and workflow-kind registries.

A step is a function `(ctx: StepContext) -> output` registered under a dotted name:

    @step("storage.provision", max_attempts=5, timeout=300)
    def provision(ctx):
        existing = find_volume(labels=ctx.labels)   # look at the world first...
        return {"volume": (existing or create_volume(...)).id}   # ...and adopt what is there

    @provision.compensate
    def unprovision(ctx):   # ctx.output is what the forward step returned (or None)
        ...

Steps must be idempotent: a step may run again after its worker died, after the broker
lost its message, or on a retry, and must then adopt what an earlier attempt made.
Outputs are JSON and stored on the Step row; later steps read them with `ctx.output_of`.

A workflow kind turns validated parameters into the planned steps and the locks it needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import InterfaceError, OperationalError


class TransientError(Exception):
    """Raise from a step for a failure worth retrying (a busy daemon, a dropped connection)."""


# Failures retried with backoff unless a step declares its own list.
DEFAULT_TRANSIENT: tuple[type[BaseException], ...] = (
    TransientError,
    ConnectionError,
    TimeoutError,
    OperationalError,
    InterfaceError,
)


@dataclass
class StepDefinition:
    name: str
    func: Callable[[Any], Any]
    max_attempts: int = 5
    timeout: int | None = None  # seconds; None: HIVEMIND_STEP_SOFT_TIME_LIMIT
    backoff: float = 1.0  # first retry after about this many seconds, doubling each time
    backoff_max: float = 60.0
    transient: tuple[type[BaseException], ...] = DEFAULT_TRANSIENT
    compensator: Callable[[Any], Any] | None = None

    @property
    def soft_time_limit(self) -> int:
        return self.timeout or settings.CONFIG.step_soft_time_limit

    def compensate(self, func: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """Decorator: register the function that undoes this step (runs in reverse order on failure)."""
        self.compensator = func
        return func

    def __call__(self, ctx):
        return self.func(ctx)


_steps: dict[str, StepDefinition] = {}
_kinds: dict[str, WorkflowKind] = {}


def step(
    name: str,
    *,
    max_attempts: int = 5,
    timeout: int | None = None,
    backoff: float = 1.0,
    backoff_max: float = 60.0,
    transient: tuple[type[BaseException], ...] = DEFAULT_TRANSIENT,
) -> Callable[[Callable], StepDefinition]:
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")

    def register(func: Callable) -> StepDefinition:
        if name in _steps and _steps[name].func is not func:
            raise ValueError(f"step {name!r} is registered twice")
        definition = StepDefinition(
            name=name,
            func=func,
            max_attempts=max_attempts,
            timeout=timeout,
            backoff=backoff,
            backoff_max=backoff_max,
            transient=transient,
        )
        _steps[name] = definition
        return definition

    return register


def get_step(name: str) -> StepDefinition:
    try:
        return _steps[name]
    except KeyError:
        raise LookupError(f"no step is registered as {name!r}; is its module imported?") from None


@dataclass(frozen=True)
class PlannedStep:
    name: str
    queue: str = ""  # empty: the control queue
    params: dict = field(default_factory=dict)  # what this one step works on (JSON)


@dataclass(frozen=True)
class Lock:
    key: str
    mode: str = "exclusive"


@dataclass
class Plan:
    steps: list[PlannedStep]
    locks: list[Lock] = field(default_factory=list)
    subject: str = ""


class WorkflowKind:
    """Subclass, set `name`, implement `clean` and `plan`, and decorate with @workflow_kind."""

    name: ClassVar[str]
    staff_only: ClassVar[bool] = False
    description: ClassVar[str] = ""

    def clean(self, params: dict) -> dict:
        """Validate and normalise parameters; raise ValidationError({field: message})."""
        if not isinstance(params, dict):
            raise ValidationError({"params": "expected an object"})
        return params

    def plan(self, params: dict) -> Plan:
        raise NotImplementedError

    def on_finished(self, workflow) -> None:
        """Called inside the transaction that moves the workflow to a final state."""


def workflow_kind(cls: type[WorkflowKind]) -> type[WorkflowKind]:
    if cls.name in _kinds and type(_kinds[cls.name]) is not cls:
        raise ValueError(f"workflow kind {cls.name!r} is registered twice")
    _kinds[cls.name] = cls()
    return cls


def get_kind(name: str) -> WorkflowKind:
    try:
        return _kinds[name]
    except KeyError:
        known = ", ".join(sorted(_kinds)) or "none"
        raise ValidationError({"kind": f"unknown workflow kind {name!r}; known kinds: {known}"}) from None


def kinds() -> dict[str, WorkflowKind]:
    return dict(_kinds)


_queue_checks: list[Callable[[str], str | None]] = []


def queue_check(func: Callable[[str], str | None]) -> Callable[[str], str | None]:
    """Register `func(queue) -> reason or None`: why nothing will consume that queue any more
    (e.g. "node edge-2 is not ready"). The reconciler fails a step waiting on such a queue."""
    if func not in _queue_checks:
        _queue_checks.append(func)
    return func


def queue_down(queue: str) -> str | None:
    for check in _queue_checks:
        reason = check(queue)
        if reason:
            return reason
    return None
