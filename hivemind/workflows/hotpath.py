"""The two statements every step runs, written once by hand for PostgreSQL.

A step's message costs two commits whatever we do: the claim (so the step is visibly
running, and a second message cannot run it too) and the result. On PostgreSQL the
claim also reads the step and its workflow in the same statement (UPDATE ... FROM ...
RETURNING), which halves the round trips of the ORM version (a SELECT, then an UPDATE).
Any other database, and every unusual case (a takeover, a cancelled or finished
workflow), goes through the ORM in engine.py; this module only answers "claimed, here
are the rows" or "not claimed, look closer".
"""

from __future__ import annotations

from datetime import datetime

from django.db import connection

from hivemind.workflows.models import Step, StepState, Workflow, WorkflowState


def _columns(model) -> list:
    return list(model._meta.concrete_fields)


_STEP_FIELDS = None
_WORKFLOW_FIELDS = None
_CLAIM_SQL = None


def _claim_sql() -> str:
    global _STEP_FIELDS, _WORKFLOW_FIELDS, _CLAIM_SQL
    if _CLAIM_SQL is None:
        _STEP_FIELDS, _WORKFLOW_FIELDS = _columns(Step), _columns(Workflow)
        step_table, workflow_table = Step._meta.db_table, Workflow._meta.db_table
        returning = ", ".join([f's."{f.column}"' for f in _STEP_FIELDS] + [f'w."{f.column}"' for f in _WORKFLOW_FIELDS])
        _CLAIM_SQL = f"""
            UPDATE "{step_table}" AS s
               SET "state" = %(running)s, "attempts" = s."attempts" + 1, "worker" = %(worker)s,
                   "started_at" = %(now)s, "finished_at" = NULL, "heartbeat_at" = %(now)s, "retry_at" = NULL,
                   "deadline" = %(now)s + make_interval(secs => s."timeout" + %(grace)s)
              FROM "{workflow_table}" AS w
             WHERE s."id" = %(step)s AND s."state" = %(pending)s AND w."id" = s."workflow_id"
               AND ((s."phase" = 'forward' AND w."state" = %(wf_running)s AND w."cancel_requested_at" IS NULL)
                 OR (s."phase" = 'compensate' AND w."state" = %(wf_compensating)s))
         RETURNING {returning}
        """
    return _CLAIM_SQL


def _instance(model, fields, values):
    converted = []
    for field, value in zip(fields, values, strict=True):
        if value is not None and hasattr(field, "from_db_value"):
            value = field.from_db_value(value, None, connection)
        converted.append(value)
    return model.from_db(connection.alias, [f.attname for f in fields], converted)


def succeed(step_id: int, *, attempt: int, output, history: list, now: datetime, span_id: str = "") -> bool:
    """Record a running attempt's success, unless the attempt was taken over meanwhile."""
    table = Step._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f'''UPDATE "{table}" SET "state" = %s, "output" = %s, "error" = '', "finished_at" = %s,
                   "heartbeat_at" = NULL, "history" = %s, "span_id" = %s
                 WHERE "id" = %s AND "state" = %s AND "attempts" = %s''',
            [StepState.SUCCEEDED, _json(output), now, _json(history), span_id, step_id, StepState.RUNNING, attempt],
        )
        return cursor.rowcount == 1


def _json(value):
    return Step._meta.get_field("output").get_db_prep_value(value, connection)


def enabled() -> bool:
    return connection.vendor == "postgresql"


def claim(step_id: int, *, worker: str, now: datetime, grace_seconds: float) -> tuple[Step, Workflow] | None:
    """Claim a pending step of an active workflow; the claimed rows, or None (look closer)."""
    with connection.cursor() as cursor:
        cursor.execute(
            _claim_sql(),
            {
                "running": StepState.RUNNING,
                "pending": StepState.PENDING,
                "wf_running": WorkflowState.RUNNING,
                "wf_compensating": WorkflowState.COMPENSATING,
                "worker": worker,
                "now": now,
                "grace": grace_seconds,
                "step": step_id,
            },
        )
        row = cursor.fetchone()
    if row is None:
        return None
    split = len(_STEP_FIELDS)
    step = _instance(Step, _STEP_FIELDS, row[:split])
    workflow = _instance(Workflow, _WORKFLOW_FIELDS, row[split:])
    step.workflow = workflow
    return step, workflow
