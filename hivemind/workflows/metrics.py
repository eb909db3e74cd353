"""Workflow metrics. Workers and the web process write them; /metrics shows them all
(prometheus-client's multiprocess mode when PROMETHEUS_MULTIPROC_DIR is set, as `manage.py up` does)."""

from prometheus_client import Counter, Histogram

WORKFLOWS = Counter(
    "hivemind_workflows",
    "Workflows that entered a state, by kind and state (pending counts creations and retries).",
    ["kind", "state"],
)
STEP_DURATION = Histogram(
    "hivemind_workflow_step_duration_seconds",
    "Time one attempt of a workflow step took, by workflow kind and step.",
    ["kind", "step"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)
STEP_ATTEMPTS = Counter(
    "hivemind_workflow_step_attempts",
    "Finished step attempts, by workflow kind, step and outcome (succeeded, retried, failed, lost).",
    ["kind", "step", "outcome"],
)
