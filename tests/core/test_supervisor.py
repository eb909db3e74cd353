"""The supervisor behind `make run` with real child processes: restarts, crash loops, stopping."""

from __future__ import annotations

import os
import re
import signal
import time
from datetime import datetime

import pytest

from hivemind.core.processes import read_state
from tests.conftest import wait_for
from tests.core.supervised import SLEEPER, WITH_POOL, Supervised, group_members, python
from tests.e2e.platform import alive


@pytest.fixture
def supervised(tmp_path):
    started: list[Supervised] = []

    def start(children, **options):
        options.setdefault("stop_timeout", 5)
        started.append(Supervised(tmp_path, children, **options))
        return started[-1]

    yield start
    for supervisor in started:
        supervisor.stop(signal.SIGTERM)
        supervisor.kill_children()


def test_a_killed_process_is_restarted_alone_and_its_group_goes_with_it(supervised):
    supervisor = supervised([("worker", python(WITH_POOL)), ("other", python(SLEEPER))])
    worker, other = supervisor.running_pid("worker"), supervisor.running_pid("other")
    pool = int(supervisor.output.wait_for(r"^worker\s+\| pool (\d+)", timeout=30).group(1))
    supervisor.output.wait_for(r"^other\s+\| up", timeout=30)

    killed = time.monotonic()
    os.kill(worker, signal.SIGKILL)
    again = supervisor.running_pid("worker", other_than=worker)
    assert time.monotonic() - killed < 5
    # The dead worker's pool child does not linger as a duplicate consumer.
    wait_for(lambda: not alive(pool), 5, "the killed worker's pool child to be gone")
    assert group_members(worker) == []

    state = supervisor.state()
    assert state["worker"]["restarts"] == 1
    assert state["worker"]["last_exit_code"] == -signal.SIGKILL
    gap = datetime.fromisoformat(state["worker"]["since"]) - datetime.fromisoformat(state["worker"]["last_exit_at"])
    assert 0 <= gap.total_seconds() < 2  # restarted after the first, short delay
    assert state["other"] == {**state["other"], "pid": other, "restarts": 0, "state": "running"}

    # The restarted instance says it is one on its lines; the supervisor says why.
    supervisor.output.wait_for(rf"^worker↻1\s*\| main {again}$", timeout=10)
    supervisor.output.wait_for(r"^hivemind \| worker killed by SIGKILL after \d+\.\ds; restarting it in 0\.5s", 1)
    assert alive(other)


def test_a_crash_loop_is_given_up_on_with_backoff_and_the_others_keep_running(supervised):
    supervisor = supervised(
        [("other", python(SLEEPER)), ("broken", python("import sys; print('no config'); sys.exit(3)"))],
        restart_delay=0.1,
        crash_loop_exits=4,
    )
    other = supervisor.running_pid("other")
    supervisor.output.wait_for(r"^hivemind \| broken is crash-looping: it exited 4 times in a row", timeout=30)
    said = "\n".join(supervisor.output.lines)
    delays = [float(d) for d in re.findall(r"broken exited with code 3 after \S+; restarting it in ([\d.]+)s", said)]
    assert delays == [0.1, 0.2, 0.4]  # doubling
    assert [line for line in supervisor.output.lines if line.startswith("broken↻3")] == ["broken↻3 | no config"]
    state = wait_for(
        lambda: supervisor.state()["broken"]["state"] == "crash-looping" and supervisor.state(), 5, "the state file"
    )
    assert state["broken"]["restarts"] == 3
    assert state["broken"]["last_exit_code"] == 3
    assert state["broken"]["pid"] is None
    assert state["other"]["pid"] == other and state["other"]["state"] == "running"
    time.sleep(1)
    assert supervisor.process.poll() is None, "the supervisor must keep running the others"
    assert alive(other)
    assert supervisor.state()["broken"]["restarts"] == 3  # really given up on


def test_a_process_that_ran_for_a_while_is_restarted_quickly_again(supervised):
    """The backoff is reset once a process has stayed up `stable_after` seconds."""
    supervisor = supervised(
        [("flaky", python("import time; print('up', flush=True); time.sleep(1.2)"))],
        restart_delay=0.1,
        stable_after=1,
        crash_loop_exits=2,
    )
    wait_for(lambda: supervisor.state().get("flaky", {}).get("restarts", 0) >= 3, 30, "three restarts")
    lines = "\n".join(supervisor.output.lines)
    assert "crash-looping" not in lines
    assert re.findall(r"restarting it in ([\d.]+)s", lines)[:3] == ["0.1", "0.1", "0.1"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_sigterm_ctrl_c_or_a_closed_terminal_stop_every_process_and_remove_the_state_file(supervised, sig):
    supervisor = supervised([("first", python(WITH_POOL)), ("second", python(SLEEPER))])
    first, second = supervisor.running_pid("first"), supervisor.running_pid("second")
    pool = int(supervisor.output.wait_for(r"^first\s+\| pool (\d+)", timeout=30).group(1))
    assert read_state(supervisor.state_file) is not None

    assert supervisor.stop(sig) == 0
    supervisor.output.wait_for(rf"^hivemind \| {sig.name} received, stopping every process", 1)
    for pid in (first, second, pool):
        assert not alive(pid)
    assert not supervisor.state_file.exists()
    assert not [line for line in supervisor.output.lines if "restarting" in line]


def test_what_a_killed_supervisor_left_running_is_stopped_by_the_next_one(tmp_path, supervised):
    first = supervised([("worker", python(WITH_POOL))])
    worker = first.running_pid("worker")
    pool = int(first.output.wait_for(r"^worker\s+\| pool (\d+)", timeout=30).group(1))
    first.stop(signal.SIGKILL)  # killed hard: its children run on, in sessions of their own
    assert alive(worker) and alive(pool)
    assert read_state(first.state_file) is None  # nobody keeps that file current any more

    second = supervised([("worker", python(WITH_POOL))])
    second.output.wait_for(rf"^hivemind \| stopping worker \(pid {worker}\), left running by a supervisor that was", 30)
    again = second.running_pid("worker", other_than=worker)
    wait_for(lambda: not alive(worker) and not alive(pool), 10, "the left-over worker and its pool to be gone")
    assert alive(again)
