"""The bootstrap is safe to run twice: the second run adopts what the first made."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from django.contrib.auth import authenticate, get_user_model

from hivemind.core import bootstrap
from tests.conftest import REPO, free_port


def test_dockerd_is_adopted_when_it_answers(docker_daemon):
    again = bootstrap.ensure_dockerd(docker_daemon.endpoint, REPO / "var" / "unused")
    assert not again.started_here
    assert again.endpoint == docker_daemon.endpoint


def test_private_redis_started_once(tmp_path):
    url = f"redis://127.0.0.1:{free_port()}/0"
    first = bootstrap.ensure_redis(url, tmp_path)
    try:
        assert first.started_here
        second = bootstrap.ensure_redis(url, tmp_path)
        assert not second.started_here
    finally:
        first.stop()
    assert first.process.poll() is not None
    assert not bootstrap.redis_answers(url)


def test_remote_redis_that_does_not_answer_is_refused(tmp_path):
    with pytest.raises(bootstrap.BootstrapError, match=re.escape("nothing answers at redis://127.0.0.2:1/0")):
        bootstrap.ensure_redis("redis://127.0.0.2:1/0", tmp_path)


def test_busybox_image_built_once_and_runs(docker_client, busybox_image):
    image_id, built = bootstrap.ensure_busybox_image(docker_client)
    assert not built
    assert image_id == busybox_image
    output = docker_client.containers.run(
        f"{bootstrap.BUSYBOX_IMAGE}:latest", ["sh", "-c", "echo hello from $(uname -s)"], remove=True
    )
    assert output.decode().strip() == "hello from Linux"


@pytest.mark.django_db
def test_admin_created_once_with_a_working_password():
    password = bootstrap.ensure_admin()
    assert password
    assert authenticate(username="admin", password=password) is not None
    assert bootstrap.ensure_admin() is None
    assert get_user_model().objects.filter(is_superuser=True).count() == 1


def _up(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "up", "--no-processes"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_up_twice_is_safe(subprocess_env, tmp_path, docker_daemon):
    subprocess_env.update(HIVEMIND_VAR_DIR=str(tmp_path), HIVEMIND_DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}")
    first = _up(subprocess_env)
    assert first.returncode == 0, first.stderr
    assert "password:" in first.stdout
    second = _up(subprocess_env)
    assert second.returncode == 0, second.stderr
    assert "password:" not in second.stdout
    assert "[docker] answers" in second.stdout
    assert "hivemind/busybox:latest up to date" in second.stdout


def test_up_names_an_unreachable_database(subprocess_env, tmp_path, docker_daemon):
    subprocess_env.update(
        HIVEMIND_VAR_DIR=str(tmp_path), HIVEMIND_DATABASE_URL=f"postgres://root@127.0.0.1:{free_port()}/hivemind"
    )
    result = _up(subprocess_env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("CommandError: HIVEMIND_DATABASE_URL: the database does not answer:")
    assert len(result.stderr.strip().splitlines()) == 1


def test_up_names_an_unreachable_docker(subprocess_env, tmp_path):
    subprocess_env.update(HIVEMIND_VAR_DIR=str(tmp_path), HIVEMIND_DOCKER_HOST="tcp://127.0.0.1:1")
    result = _up(subprocess_env)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "CommandError: HIVEMIND_DOCKER_HOST: nothing answers at tcp://127.0.0.1:1, and it is not a local socket"
    )


def test_system_bootstrap_again_installs_nothing():
    result = subprocess.run(
        ["scripts/bootstrap.sh", "requirements-dev.txt"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "apt" not in result.stdout
    assert "Python dependencies up to date" in result.stdout


# --- `manage.py up --agent` (`make agent`): joining a machine refuses what cannot work ------------


def _agent(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "up", "--agent", "--no-processes"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("CommandError: ")
    return lines[0].removeprefix("CommandError: ")


@pytest.fixture
def postgres_url():
    """A URL of the suite's PostgreSQL server for database `name`."""
    from django.db import connection

    db = connection.settings_dict
    return lambda name: f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{name}"


@pytest.mark.parametrize("database_url", ["", "sqlite:////tmp/first-machine.sqlite3"])
def test_agent_refuses_sqlite(subprocess_env, tmp_path, database_url):
    subprocess_env.update(HIVEMIND_VAR_DIR=str(tmp_path), HIVEMIND_DATABASE_URL=database_url)
    error = _one_line_error(_agent(subprocess_env))
    assert error.startswith(
        "HIVEMIND_DATABASE_URL is not set, so this machine would use a SQLite file of its own."
        if not database_url
        else "HIVEMIND_DATABASE_URL points at SQLite (sqlite:////tmp/first-machine.sqlite3)."
    )
    assert "SQLite is one machine's file" in error
    assert "Move the first machine to PostgreSQL" in error
    assert "set HIVEMIND_DATABASE_URL here to the same postgres://" in error
    assert not (tmp_path / "hivemind.sqlite3").exists()


def test_agent_never_starts_a_redis_and_explains_a_loopback_broker(subprocess_env, tmp_path, postgres_url):
    url = f"redis://127.0.0.1:{free_port()}/0"
    subprocess_env.update(
        HIVEMIND_VAR_DIR=str(tmp_path), HIVEMIND_DATABASE_URL=postgres_url("hivemind"), HIVEMIND_REDIS_URL=url
    )
    error = _one_line_error(_agent(subprocess_env))
    assert error.startswith(f"HIVEMIND_REDIS_URL: nothing answers at {url}, an address of this machine only.")
    assert "uses the first machine's Redis and never starts its own" in error
    assert "listen on an address this machine reaches" in error
    assert not bootstrap.redis_answers(url)
    assert not (tmp_path / "redis").exists()


def test_agent_names_a_remote_broker_that_does_not_answer(subprocess_env, tmp_path, postgres_url):
    url = "redis://:secret@192.0.2.1:6379/0"  # TEST-NET-1: routed nowhere
    subprocess_env.update(
        HIVEMIND_VAR_DIR=str(tmp_path), HIVEMIND_DATABASE_URL=postgres_url("hivemind"), HIVEMIND_REDIS_URL=url
    )
    error = _one_line_error(_agent(subprocess_env))
    assert error.startswith("HIVEMIND_REDIS_URL: the first machine's broker at redis://:***@192.0.2.1:6379/0 does not")
    assert "secret" not in error
    assert "listens on that address" in error


def test_agent_refuses_a_database_without_the_schema_and_never_migrates(subprocess_env, tmp_path, postgres_url):
    import psycopg
    from django.db import connection

    db = connection.settings_dict
    name = f"hm_join_{free_port()}"
    admin = psycopg.connect(host=db["HOST"], port=db["PORT"], user=db["USER"], dbname="postgres", autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        subprocess_env.update(HIVEMIND_VAR_DIR=str(tmp_path), HIVEMIND_DATABASE_URL=postgres_url(name))
        error = _one_line_error(_agent(subprocess_env))
        assert error == (
            f"HIVEMIND_DATABASE_URL: the database '{name}' has no Hivemind schema; run `make run` "
            "(or `manage.py up --no-processes`) on the first machine first."
        )
        # Half a schema (only one app migrated) is refused as well, naming what is missing.
        migrated = subprocess.run(
            [sys.executable, "manage.py", "migrate", "contenttypes"],
            cwd=REPO,
            env=subprocess_env,
            capture_output=True,
            timeout=120,
        )
        assert migrated.returncode == 0, migrated.stderr
        error = _one_line_error(_agent(subprocess_env))
        assert re.match(
            rf"HIVEMIND_DATABASE_URL: the database '{name}' has \d+ unapplied migrations \([a-z_]+\.\d{{4}}_\w+, .*\); "
            r"run `make run` \(or `manage.py up --no-processes`\) on the first machine first, with the same Hivemind "
            r"version as this machine\. A joining machine never migrates\.$",
            error,
        ), error
        with psycopg.connect(host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=name) as check:
            tables = {row[0] for row in check.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert "auth_user" not in tables  # nothing was migrated by the agent
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_up_refuses_to_run_the_platform_twice_on_one_var_dir(subprocess_env, tmp_path):
    from tests.core.supervised import SLEEPER, Supervised, python

    running = Supervised(tmp_path, [("web", python(SLEEPER))])  # as a first `make run` keeps its state file
    try:
        running.running_pid("web")
        subprocess_env.update(HIVEMIND_VAR_DIR=str(tmp_path))
        up = [sys.executable, "manage.py", "up"]
        result = subprocess.run(up, cwd=REPO, env=subprocess_env, capture_output=True, text=True, timeout=60)
        assert _one_line_error(result) == (
            f"another `manage.py up` (pid {running.process.pid}) already runs the platform with "
            f"HIVEMIND_VAR_DIR={tmp_path}; stop it first (Ctrl-C in its terminal, or kill -TERM {running.process.pid})"
        )
    finally:
        running.stop()


@pytest.mark.django_db
def test_agent_preparation_passes_on_a_migrated_database_and_names_an_unset_secret_key(
    subprocess_env, tmp_path, postgres_url, docker_daemon, busybox_image
):
    from django.conf import settings
    from django.db import connection

    subprocess_env.update(
        HIVEMIND_VAR_DIR=str(tmp_path),
        HIVEMIND_DATABASE_URL=postgres_url(connection.settings_dict["NAME"]),  # the suite's migrated database
        HIVEMIND_REDIS_URL=settings.CELERY_BROKER_URL,
        HIVEMIND_DOCKER_HOST=docker_daemon.endpoint,
    )
    subprocess_env.pop("HIVEMIND_SECRET_KEY", None)
    result = _agent(subprocess_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"[redis] checking the first machine's broker at {settings.CELERY_BROKER_URL}",
        "[redis] answers",
        f"[database] checking the first machine's database at {subprocess_env['HIVEMIND_DATABASE_URL']}",
        "[database] answers, schema up to date",
        f"[secret] HIVEMIND_SECRET_KEY is not set: using {tmp_path / 'secret_key'}, which must hold the first "
        "machine's key (copy its file, or set HIVEMIND_SECRET_KEY to the same value on both)",
        f"[docker] checking the Docker daemon at {docker_daemon.endpoint}",
        "[docker] answers",
        f"[image] hivemind/busybox:latest up to date ({busybox_image[7:19]})",
        "[storage] no default pool (HIVEMIND_STORAGE_POOL=off)",  # the suite's setting; `make run` says auto
    ]
