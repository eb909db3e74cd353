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
