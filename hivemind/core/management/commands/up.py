"""`manage.py up`: what `make run` (and, with --agent, `make agent`) starts after the virtualenv exists."""

from __future__ import annotations

import os
import shutil
import sys

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from hivemind.core import bootstrap, processes
from hivemind.core.health import check_database
from hivemind.core.supervisor import Supervisor
from hivemind.nodes.runtime import docker_client


class Command(BaseCommand):
    help = (
        "Bring the platform up on this machine and run it in the foreground: Redis and Docker "
        "(started privately under HIVEMIND_VAR_DIR when none answers), the hivemind/busybox image, "
        "migrations, the first admin account, then web, controller, this node's agent and beat, each "
        "restarted when it exits unexpectedly. Ctrl-C stops everything it started. With --agent, join a "
        "platform that runs on another machine: only this node's agent runs. "
        "Example: HIVEMIND_WEB_BIND=0.0.0.0:8000 ./manage.py up"
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--no-processes",
            action="store_true",
            help="prepare everything, then exit instead of starting the processes",
        )
        parser.add_argument(
            "--agent",
            action="store_true",
            help=(
                "join the platform whose database (PostgreSQL) and broker HIVEMIND_DATABASE_URL and "
                "HIVEMIND_REDIS_URL name, and run only this node's agent; never migrates, never starts a Redis"
            ),
        )

    def handle(self, *args, no_processes: bool = False, agent: bool = False, **options):
        var_dir = settings.VAR_DIR
        var_dir.mkdir(parents=True, exist_ok=True)
        if not no_processes and (pid := processes.running_supervisor(processes.state_path(var_dir))):
            raise CommandError(
                f"another `manage.py up` (pid {pid}) already runs the platform with HIVEMIND_VAR_DIR={var_dir}; "
                f"stop it first (Ctrl-C in its terminal, or kill -TERM {pid})"
            )
        services: list[bootstrap.LocalService] = []
        try:
            if agent:
                self._prepare_agent(services, var_dir)
            else:
                self._prepare(services, var_dir)
            if no_processes:
                return
            code = self._supervise(agent=agent)
        finally:
            for service in reversed(services):
                if service.started_here:
                    self.stdout.write(f"stopping the {service.name} started for this run")
                    service.stop()
        if code:
            raise CommandError("every platform process crash-looped and was given up on; see their lines above")

    # --- preparation -------------------------------------------------------------------

    def _prepare(self, services: list, var_dir) -> None:
        step = self._step
        try:
            step("redis", f"checking the broker at {bootstrap.redact(settings.CELERY_BROKER_URL)}")
            redis = bootstrap.ensure_redis(settings.CELERY_BROKER_URL, var_dir)
            services.append(redis)
            step("redis", "started a private redis-server" if redis.started_here else "answers")
            self._prepare_docker(services, var_dir)
        except bootstrap.BootstrapError as exc:
            raise CommandError(str(exc)) from None
        self._prepare_storage()

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

    def _prepare_agent(self, services: list, var_dir) -> None:
        """Check what the first machine shares (database, broker) before touching anything here."""
        step = self._step
        try:
            bootstrap.require_shared_database(
                settings.CONFIG.database_url, from_env=os.environ.get("HIVEMIND_DATABASE_URL", "")
            )
            step("redis", f"checking the first machine's broker at {bootstrap.redact(settings.CELERY_BROKER_URL)}")
            bootstrap.require_remote_broker(settings.CELERY_BROKER_URL)
            step("redis", "answers")
            database_url = bootstrap.redact(settings.CONFIG.database_url)
            step("database", f"checking the first machine's database at {database_url}")
            database = check_database()
            if database["status"] != "up":
                raise bootstrap.BootstrapError(
                    f"HIVEMIND_DATABASE_URL: the first machine's database does not answer: {database['error']}"
                )
            bootstrap.require_migrated_schema(connection)
            step("database", "answers, schema up to date")
            if not os.environ.get("HIVEMIND_SECRET_KEY"):
                step(
                    "secret",
                    f"HIVEMIND_SECRET_KEY is not set: using {var_dir / 'secret_key'}, which must hold the first "
                    "machine's key (copy its file, or set HIVEMIND_SECRET_KEY to the same value on both)",
                )
            self._prepare_docker(services, var_dir)
        except bootstrap.BootstrapError as exc:
            raise CommandError(str(exc)) from None
        finally:
            connection.close()  # the supervisor's children open their own
        self._prepare_storage()

    def _prepare_docker(self, services: list, var_dir) -> None:
        step = self._step
        docker_host = settings.DOCKER_HOST
        explicit = bool(os.environ.get("HIVEMIND_DOCKER_HOST"))
        step("docker", f"checking the Docker daemon at {docker_host}")
        if not explicit and not bootstrap.docker_answers(docker_host):
            docker_host = f"unix://{var_dir / 'docker' / 'docker.sock'}"
        # With HIVEMIND_NODE_NETNS the node's network (and so its private dockerd) lives in that namespace.
        dockerd = bootstrap.ensure_dockerd(docker_host, var_dir / "docker", netns=settings.CONFIG.node_netns)
        services.append(dockerd)
        self.docker_host = docker_host
        step("docker", f"started a private dockerd at {docker_host}" if dockerd.started_here else "answers")

        client = docker_client(docker_host)
        try:
            image_id, built = bootstrap.ensure_busybox_image(client)
        finally:
            client.close()
        step("image", f"{bootstrap.BUSYBOX_IMAGE}:latest {'built' if built else 'up to date'} ({image_id[7:19]})")

    def _prepare_storage(self) -> None:
        """The node's default storage pool: btrfs on a loop file when the kernel can, else a
        local directory (HIVEMIND_STORAGE_POOL; `auto` unless set). The agent registers it."""
        from storage import bootstrap as storage

        mode = settings.CONFIG.storage_pool if os.environ.get("HIVEMIND_STORAGE_POOL") else "auto"
        try:
            pool_plan = storage.plan(mode)
            storage.prepare(pool_plan)
        except Exception as exc:  # a loop device or mount refused: say so, the platform runs without a pool
            raise CommandError(f"HIVEMIND_STORAGE_POOL={mode}: cannot set up the default storage pool: {exc}") from None
        self.storage_mode = pool_plan.provider or "off"
        if pool_plan.provider:
            self._step("storage", f"default pool: {pool_plan.provider} in {pool_plan.path} ({pool_plan.reason})")
        else:
            self._step("storage", f"no default pool ({pool_plan.reason})")

    # --- the processes -----------------------------------------------------------------

    def _supervise(self, *, agent: bool) -> int:
        # The virtualenv's bin directory as invoked (not resolved: its python is a symlink).
        bindir = os.path.dirname(os.path.abspath(sys.executable))
        # Every process writes its metrics under one directory; /metrics adds them up.
        metrics_dir = settings.VAR_DIR / "metrics"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        env = {
            **os.environ,
            "HIVEMIND_DOCKER_HOST": self.docker_host,
            "HIVEMIND_STORAGE_POOL": self.storage_mode,  # what `auto` resolved to, for the agent
            "PYTHONUNBUFFERED": "1",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        }
        node = settings.NODE_NAME
        supervisor = Supervisor(env=env, state_file=processes.state_path(settings.VAR_DIR))
        for spec in processes.platform_processes(
            config=settings.CONFIG, bindir=bindir, control_queue=settings.CONTROL_QUEUE
        ):
            if not agent or spec.name == "agent":
                supervisor.add(spec.name, spec.argv)
        if agent:
            self.stdout.write(
                f"\n  Hivemind agent for node {node} is starting; it joins the platform whose database is "
                f"{bootstrap.redact(settings.CONFIG.database_url)}.\n"
                "  The node is listed by `hivemind node ls` on any machine once the agent is ready.\n"
                "  Press Ctrl-C to stop.\n"
            )
        else:
            host, _, port = settings.CONFIG.web_bind.rpartition(":")
            shown = "127.0.0.1" if host in ("0.0.0.0", "::", "[::]") else host  # noqa: S104 - a wildcard bind is shown as loopback
            base = f"http://{shown}:{port}"
            self.stdout.write(
                f"\n  Hivemind is starting on node {node}.\n"
                f"    dashboard  {base}/\n    admin      {base}/admin/\n    API docs   {base}/api/docs/\n"
                f"    health     {base}/api/v1/health/\n    metrics    {base}/metrics\n"
                f'    CLI        export PATH="{bindir}:$PATH"; hivemind login --server {base} --username admin\n'
                "  A process that exits unexpectedly is restarted; containers keep running.\n"
                "  Press Ctrl-C to stop.\n"
            )
        self.stdout.flush()
        return supervisor.run()

    def _step(self, part: str, message: str) -> None:
        self.stdout.write(f"[{part}] {message}")
        self.stdout.flush()
