"""A running step's heartbeat: one daemon thread per worker process stamps the step's row.

A step that runs longer than HIVEMIND_STEP_HEARTBEAT seconds gets `heartbeat_at` renewed
every interval. When its worker is killed the stamps stop, and the reconciler takes the
step over after three missed beats. Steps shorter than one interval cost nothing.
"""

from __future__ import annotations

import logging
import os
import threading

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(self) -> None:
        self._current: tuple[int, int] | None = None  # (step id, attempt)
        self._pid: int | None = None

    def watch(self, step_id: int, attempt: int) -> None:
        if self._pid != os.getpid():  # first use in this (possibly forked) process
            self._pid = os.getpid()
            threading.Thread(target=self._run, name="step-heartbeat", daemon=True).start()
        self._current = (step_id, attempt)

    def clear(self) -> None:
        self._current = None

    def _run(self) -> None:
        from hivemind.workflows.models import Step, StepState

        interval = settings.CONFIG.step_heartbeat
        stop = threading.Event()
        while not stop.wait(interval):
            current = self._current
            if current is None:
                continue
            try:
                Step.objects.filter(pk=current[0], state=StepState.RUNNING, attempts=current[1]).update(
                    heartbeat_at=timezone.now()
                )
            except Exception:
                log.exception("could not record the heartbeat of step %s", current[0])
            finally:
                close_old_connections()


heartbeat = Heartbeat()
