"""`manage.py process NAME`: become one platform process (what the systemd units run)."""

from __future__ import annotations

import os
import sys

from django.conf import settings
from django.core.management.base import BaseCommand

from hivemind.core import processes


class Command(BaseCommand):
    help = (
        "Run one platform process in the foreground by exec'ing its command line from the table "
        "`manage.py up` uses (hivemind/core/processes.py): web, controller, agent or beat. The systemd "
        "units run this, so production and `make run` start the same commands. Example: ./manage.py process agent"
    )

    def add_arguments(self, parser):
        parser.add_argument("name", choices=processes.ROLES, help="the process to run")

    def handle(self, *args, name: str, **options):
        bindir = os.path.dirname(os.path.abspath(sys.executable))
        spec = processes.process_spec(name, config=settings.CONFIG, bindir=bindir, control_queue=settings.CONTROL_QUEUE)
        sys.stdout.flush()
        sys.stderr.flush()
        # exec: the process manager (systemd) supervises and signals the real process, not a wrapper.
        os.execv(spec.argv[0], spec.argv)  # noqa: S606 - a command line of our own table, no shell
