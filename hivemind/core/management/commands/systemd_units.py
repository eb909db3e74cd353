"""`manage.py systemd_units`: write the systemd units of the platform's processes."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from hivemind.core import processes


class Command(BaseCommand):
    help = (
        "Write hivemind-web, -controller, -agent and -beat .service units and hivemind.target, made from "
        "the same process table as `manage.py up` (each unit runs `manage.py process NAME`). "
        "Example: ./manage.py systemd_units --prefix /opt/hivemind --output /etc/systemd/system"
    )

    def add_arguments(self, parser):
        parser.add_argument("--output", required=True, help="directory to write the units into")
        parser.add_argument("--prefix", default="/opt/hivemind", help="where this repository is installed")
        parser.add_argument("--venv", default=None, help="the virtualenv (default: PREFIX/.venv)")
        parser.add_argument("--user", default="hivemind", help="user and group the processes run as")
        parser.add_argument("--env-file", default="/etc/hivemind/hivemind.env", help="the HIVEMIND_* settings")
        parser.add_argument(
            "--var-dir", default="/var/lib/hivemind", help="HIVEMIND_VAR_DIR unless the env file sets it"
        )

    def handle(self, *args, output: str, prefix: str, venv, user: str, env_file: str, var_dir: str, **options):
        for name, value in (("--prefix", prefix), ("--env-file", env_file), ("--var-dir", var_dir)):
            if not value.startswith("/"):
                raise CommandError(f"{name}: expected an absolute path, got {value!r}")
        if venv is not None and not venv.startswith("/"):
            raise CommandError(f"--venv: expected an absolute path, got {venv!r}")
        directory = Path(output)
        if not directory.is_dir():
            raise CommandError(f"--output: {directory} is not a directory")
        units = processes.systemd_units(prefix=prefix, venv=venv, user=user, env_file=env_file, var_dir=var_dir)
        for name, text in units.items():
            (directory / name).write_text(text)
            self.stdout.write(f"wrote {directory / name}")
