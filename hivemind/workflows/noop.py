"""The `noop` workflow kind: N steps that do nothing useful, for tests and benchmarks (staff only).

Parameters (all optional):
  steps          number of steps, 1-100 (3)
  sleep          seconds each step sleeps, 0-600 (0)
  fail_at        the step number (1-based) that fails
  fail           "permanent" (default) or "transient" (retried with backoff)
  fail_attempts  fail only the first N tries of that step (counted across retries of the
                 whole workflow), then succeed
  locks          [{"key": "volume:42", "mode": "exclusive"|"shared"}]
  record         write each step's effect ("step 2", "undo 2") once to
                 $HIVEMIND_VAR_DIR/noop-effects/<workflow id>-<trace id>.log
  node           run the steps on that node's queue (node.<name>) instead of the control queue
"""

from __future__ import annotations

import fcntl
import time
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError

from hivemind.core.names import is_dns_label
from hivemind.workflows.registry import Lock, Plan, PlannedStep, TransientError, WorkflowKind, step, workflow_kind

PARAMS = {"steps", "sleep", "fail_at", "fail", "fail_attempts", "locks", "record", "node"}


def effects_path(workflow) -> Path:
    """One file per workflow; the trace id keeps it apart from a file of an earlier database."""
    return Path(settings.VAR_DIR) / "noop-effects" / f"{workflow.pk}-{workflow.trace_id[:12]}.log"


def _record_once(workflow, line: str) -> None:
    """The step's side effect, made idempotent the way every step must be: look first, then act."""
    path = effects_path(workflow)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        if line not in fh.read().splitlines():
            fh.write(line + "\n")


@step("noop.step", max_attempts=4, backoff=0.2, backoff_max=2.0)
def noop_step(ctx):
    params = ctx.params
    number = ctx.step.index + 1
    if params["record"]:
        _record_once(ctx.workflow, f"step {number}")
    if params["sleep"]:
        time.sleep(params["sleep"])
    tries = len(ctx.step.history) + 1  # this attempt, counting earlier runs of the workflow
    if params["fail_at"] == number and (params["fail_attempts"] is None or tries <= params["fail_attempts"]):
        message = f"noop step {number} fails on purpose (attempt {ctx.attempt})"
        if params["fail"] == "transient":
            raise TransientError(message)
        raise RuntimeError(message)
    return {"step": number, "attempt": ctx.attempt}


@noop_step.compensate
def noop_undo(ctx):
    if ctx.params["record"]:
        _record_once(ctx.workflow, f"undo {ctx.step.compensates.index + 1}")
    return {"undone": ctx.step.compensates.index + 1}


def _number(params: dict, name: str, default, *, low, high, kind=int):
    value = params.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and not float(value).is_integer()):
        raise ValidationError({name: f"expected {'a whole number' if kind is int else 'a number'}, got {value!r}"})
    if not low <= value <= high:
        raise ValidationError({name: f"expected {low} to {high}, got {value}"})
    return kind(value)


@workflow_kind
class Noop(WorkflowKind):
    name = "noop"
    staff_only = True
    description = "steps that do nothing (tests and benchmarks)"

    def clean(self, params: dict) -> dict:
        params = super().clean(params)
        unknown = set(params) - PARAMS
        if unknown:
            raise ValidationError({"params": f"unknown parameter(s): {', '.join(sorted(unknown))}"})
        steps = _number(params, "steps", 3, low=1, high=100)
        cleaned = {
            "steps": steps,
            "sleep": _number(params, "sleep", 0, low=0, high=600, kind=float),
            "fail_at": _number(params, "fail_at", None, low=1, high=steps),
            "fail_attempts": _number(params, "fail_attempts", None, low=1, high=100),
            "fail": params.get("fail", "permanent"),
            "record": params.get("record", False),
            "node": params.get("node"),
            "locks": params.get("locks", []),
        }
        if cleaned["fail"] not in ("permanent", "transient"):
            raise ValidationError({"fail": f"expected permanent or transient, got {cleaned['fail']!r}"})
        if not isinstance(cleaned["record"], bool):
            raise ValidationError({"record": "expected true or false"})
        if cleaned["node"] is not None and not is_dns_label(cleaned["node"]):
            raise ValidationError({"node": f"expected a node name (a DNS label), got {cleaned['node']!r}"})
        locks = cleaned["locks"]
        if not isinstance(locks, list) or len(locks) > 20:
            raise ValidationError({"locks": "expected a list of at most 20 {key, mode} objects"})
        for lock in locks:
            if not isinstance(lock, dict) or set(lock) - {"key", "mode"} or not isinstance(lock.get("key"), str):
                raise ValidationError({"locks": f"expected {{'key': 'volume:42', 'mode': 'exclusive'}}, got {lock!r}"})
            lock.setdefault("mode", "exclusive")
        return cleaned

    def plan(self, params: dict) -> Plan:
        queue = f"node.{params['node']}" if params["node"] else ""
        return Plan(
            steps=[PlannedStep("noop.step", queue=queue) for _ in range(params["steps"])],
            locks=[Lock(lock["key"], lock["mode"]) for lock in params["locks"]],
            subject=",".join(lock["key"] for lock in params["locks"]),
        )
