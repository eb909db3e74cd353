"""`manage.py up`: what `make run` starts after the virtualenv exists."""

from __future__ import annotations

import os
import shutil
import sys

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from hivemind.core import bootstrap
from hivemind.core.health import check_database
from hivemind.core.supervisor import Supervisor
from hivemind.nodes.runtime import docker_client


class Command(BaseCommand):
    help = (
        "Bring the platform up on this machine and run it in the foreground: Redis and Docker "
        "(started privately under HIVEMIND_VAR_DIR when none answers), the hivemind/busybox image, "
        "migrations, the first admin account, then web, controller, this node's agent and beat. "
        "Ctrl-C stops everything it started. Example: HIVEMIND_WEB_BIND=0.0.0.0:8000 ./manage.py up"
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--no-processes",
            action="store_true",
            help="prepare everything, then exit instead of starting the processes",
        )

    def handle(self, *args, no_processes: bool = False, **options):
        var_dir = settings.VAR_DIR
        var_dir.mkdir(parents=True, exist_ok=True)
        services: list[bootstrap.LocalService] = []
        try:
            self._prepare(services, var_dir)
            if no_processes:
                return
            code = self._supervise()
        finally:
            for service in reversed(services):
                if service.started_here:
                    self.stdout.write(f"stopping the {service.name} started for this run")
                    service.stop()
        if code:
            raise CommandError("a platform process exited unexpectedly; see its lines above")

    def _prepare(self, services: list, var_dir) -> None:
        step = self._step
        try:
            step("redis", f"checking the broker at {settings.CELERY_BROKER_URL}")
            redis = bootstrap.ensure_redis(settings.CELERY_BROKER_URL, var_dir)
            services.append(redis)
            step("redis", "started a private redis-server" if redis.started_here else "answers")

            docker_host = settings.DOCKER_HOST
            explicit = bool(os.environ.get("HIVEMIND_DOCKER_HOST"))
            step("docker", f"checking the Docker daemon at {docker_host}")
            if not explicit and not bootstrap.docker_answers(docker_host):
                docker_host = f"unix://{var_dir / 'docker' / 'docker.sock'}"
            dockerd = bootstrap.ensure_dockerd(docker_host, var_dir / "docker")
            services.append(dockerd)
            self.docker_host = docker_host
            step("docker", f"started a private dockerd at {docker_host}" if dockerd.started_here else "answers")

            client = docker_client(docker_host)
            image_id, built = bootstrap.ensure_busybox_image(client)
            client.close()
            step("image", f"{bootstrap.BUSYBOX_IMAGE}:latest {'built' if built else 'up to date'} ({image_id[7:19]})")
        except bootstrap.BootstrapError as exc:
            raise CommandError(str(exc)) from None

        database = check_database()
        if database["status"] != "up":
            raise CommandError(f"HIVEMIND_DATABASE_URL: the database does not answer: {database['error']}")
        step("database", "migrating")
        call_command("migrate", interactive=False, verbosity=0)
        password = bootstrap.ensure_admin()
        if password:
            self.stdout.write(
                self.style.WARNING(
                    "\n  First run: created the admin account.\n"
                    f"    username: admin\n    password: {password}\n"
                    "  It is shown this once and stored only as a hash; change it in the admin.\n"
                )
            )

    def _supervise(self) -> int:
        python = sys.executable
        bindir = os.path.dirname(python)
        # Every process writes its metrics under one directory; /metrics adds them up.
        metrics_dir = settings.VAR_DIR / "metrics"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        env = {
            **os.environ,
            "HIVEMIND_DOCKER_HOST": self.docker_host,
            "PYTHONUNBUFFERED": "1",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        }
        node = settings.NODE_NAME
        supervisor = Supervisor(env=env)
        supervisor.add(
            "web",
            [
                os.path.join(bindir, "gunicorn"),
                "hivemind.wsgi",
                "--bind",
                settings.CONFIG.web_bind,
                "--workers",
                "1",
                "--threads",
                str(settings.CONFIG.web_threads),
                "--access-logfile",
                "-",
                "--graceful-timeout",
                "10",
                "--no-control-socket",
            ],
        )
        celery = [os.path.join(bindir, "celery"), "-A", "hivemind"]
        supervisor.add(
            "controller",
            [
                *celery,
                "worker",
                "-Q",
                settings.CONTROL_QUEUE,
                "-n",
                "controller@%h",
                "--concurrency",
                str(settings.CONFIG.worker_concurrency),
                "-l",
                "INFO",
            ],
        )
        supervisor.add(
            "agent",
            [
                *celery,
                "worker",
                "-Q",
                f"node.{node}",
                "-n",
                f"agent.{node}@%h",
                "--concurrency",
                str(settings.CONFIG.worker_concurrency),
                "-l",
                "INFO",
            ],
        )
        supervisor.add(
            "beat",
            [*celery, "beat", "-l", "INFO", "--pidfile=", "-S", "django_celery_beat.schedulers:DatabaseScheduler"],
        )
        host, _, port = settings.CONFIG.web_bind.rpartition(":")
        shown = "127.0.0.1" if host in ("0.0.0.0", "::", "[::]") else host  # noqa: S104 - a wildcard bind is shown as loopback
        base = f"http://{shown}:{port}"
        self.stdout.write(
            f"\n  Hivemind is starting on node {node}.\n"
            f"    dashboard  {base}/\n    admin      {base}/admin/\n    API docs   {base}/api/docs/\n"
            f"    health     {base}/api/v1/health/\n    metrics    {base}/metrics\n"
            "  Press Ctrl-C to stop.\n"
        )
        self.stdout.flush()
        return supervisor.run()

    def _step(self, part: str, message: str) -> None:
        self.stdout.write(f"[{part}] {message}")
        self.stdout.flush()
