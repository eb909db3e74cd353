"""Searching an app's container logs across its replicas: `GET /api/v1/apps/{id}/logs/?grep=`
and `hivemind app logs NAME --grep`. Each node's agent (a real worker on node.<name>) reads its
replicas from the suite's real Docker daemon and returns only the matching lines."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from hivemind.applications import logs, services
from hivemind.applications.models import App
from hivemind.workflows.models import WorkflowState
from tests.applications.conftest import finished
from tests.cli.conftest import cli, login_as, one_error_line  # noqa: F401 - `cli`: the CLI as a subprocess
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

A_RUN = "a" * 40  # `(a+)+b` takes 2^40 steps to give up on this
# Each replica says five things, the last one a second after the others, then sleeps.
CHATTY = {
    "image": "hivemind/busybox:latest",
    "command": "sh -c 'echo INFO start $(hostname); echo ERROR disk full on $(hostname); echo warn: an error-ish line; "
    f"echo {A_RUN}; sleep 1; echo ERROR again on $(hostname); sleep 3600'",
    "resources": {"cpu": "100m", "memory": "16Mi"},
}


@pytest.fixture
def chatty(platform_processes, world, node) -> App:
    app_worker = platform_processes("worker")
    app = services.app_deploy(tenant=world.a, name="chatty", spec=CHATTY, replicas=2, actor=world.users["staff"])
    assert finished(app.workflow).state == WorkflowState.SUCCEEDED, app.workflow.error

    def said_everything():
        body = world.client("viewer").get(f"/api/v1/apps/{app.pk}/logs/").json()
        return len(body["lines"]) == 10

    wait_for(said_everything, 30, "both replicas to print their five lines")
    app.worker = app_worker
    return app


def search(world, app: App, who: str = "viewer", **params):
    return world.client(who).get(f"/api/v1/apps/{app.pk}/logs/", params)


def texts(body: dict) -> list[tuple[str, str]]:
    """(replica prefix, text) of each line, in the order the API gave them."""
    parsed = []
    for line in body["lines"]:
        prefix, _stamp, text = line.split(" ", 2)
        parsed.append((prefix, text))
    return parsed


def stamps(body: dict) -> list[datetime]:
    return [datetime.fromisoformat(line.split(" ", 2)[1]) for line in body["lines"]]


def test_grep_keeps_the_matching_lines_of_every_replica_in_time_order(world, chatty):
    response = search(world, chatty, grep="ERROR")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["grep"] == "ERROR"
    assert sorted(texts(body)) == [
        ("[chatty-0]", "ERROR again on chatty-0"),
        ("[chatty-0]", "ERROR disk full on chatty-0"),
        ("[chatty-1]", "ERROR again on chatty-1"),
        ("[chatty-1]", "ERROR disk full on chatty-1"),
    ]
    assert stamps(body) == sorted(stamps(body))  # the replicas merged by time
    # The second ERROR of each replica comes a second after both first ones.
    assert [text.split()[1] for _, text in texts(body)][2:] == ["again", "again"]
    assert [(c["replica"], c["lines"], c["scanned"], c["error"]) for c in body["containers"]] == [
        (0, 2, 5, None),
        (1, 2, 5, None),
    ]

    # A regular expression; (?i) ignores case; tail counts matches, from the end.
    ignoring_case = search(world, chatty, grep="(?i)error").json()
    assert len(ignoring_case["lines"]) == 6
    assert {text for _, text in texts(ignoring_case)} >= {"warn: an error-ish line"}
    latest = search(world, chatty, grep=r"^ERROR (disk|again) on chatty-\d$", tail=1).json()
    assert sorted(texts(latest)) == [
        ("[chatty-0]", "ERROR again on chatty-0"),
        ("[chatty-1]", "ERROR again on chatty-1"),
    ]
    one = search(world, chatty, grep="disk full", replica=1).json()
    assert texts(one) == [("[chatty-1]", "ERROR disk full on chatty-1")]
    assert search(world, chatty, grep="no such words").json()["lines"] == []
    assert len(search(world, chatty, grep="").json()["lines"]) == 10  # empty is no pattern (DRF reads ?x= so)

    # With since: only what matched since then.
    after_first = max(stamps(body)[:2]) + timedelta(milliseconds=1)
    recent = search(world, chatty, grep="ERROR", since=after_first.isoformat()).json()
    assert {text.split()[1] for _, text in texts(recent)} == {"again"}
    assert search(world, chatty, grep="ERROR", since="1h").json()["lines"] == body["lines"]


@pytest.mark.parametrize(
    ("grep", "message"),
    [
        ("(", "not a valid regular expression: missing ), unterminated subpattern at position 0"),
        ("[a-", "not a valid regular expression: unterminated character set at position 0"),
        ("x{2,1}", "not a valid regular expression: min repeat greater than max repeat"),
        ("a" * (logs.MAX_GREP + 1), f"no more than {logs.MAX_GREP} characters"),
    ],
)
def test_a_bad_pattern_is_400_naming_grep(world, grep, message):
    app = App.objects.create(tenant=world.a, name="quiet", replicas=0)  # checked before any node is asked
    response = search(world, app, grep=grep)
    assert response.status_code == 400, response.content
    assert list(response.json()) == ["grep"]
    assert message in response.json()["grep"][0], response.json()


def test_another_tenants_app_cannot_be_searched(world, chatty):
    assert search(world, chatty, "outsider", grep="ERROR").status_code == 404
    assert world.client(None).get(f"/api/v1/apps/{chatty.pk}/logs/", {"grep": "ERROR"}).status_code == 401


def test_a_pattern_that_backtracks_for_ever_is_stopped_on_the_agent(world, chatty, monkeypatch):
    """Python's regular expressions can take exponential time; the agent's task has a time limit
    just past the caller's patience, so such a pattern costs a timeout answer, not a busy node."""
    monkeypatch.setattr(logs, "ANSWER_TIMEOUT", 2.0)  # the web side's patience (this process)
    started = time.monotonic()
    body = search(world, chatty, grep="(a+)+b").json()
    assert time.monotonic() - started < 10
    assert body["lines"] == []
    assert {c["error"] for c in body["containers"]} == {
        f"node {chatty.containers.first().node.name} did not answer within 2 s"
    }
    wait_for(lambda: "SoftTimeLimitExceeded" in chatty.worker.output(), 60, "the agent to stop the search")
    assert len(search(world, chatty, grep="ERROR").json()["lines"]) == 4  # and it answers the next question


def test_the_cli_merges_the_replicas_matches_in_time_order(cli, web_server, world, chatty):  # noqa: F811
    login_as(cli, web_server, world, "viewer")
    found = cli("app", "logs", "chatty", "--grep", "error", "-i", "--since", "1h")
    assert found.code == 0, found
    lines = found.out.splitlines()
    assert len(lines) == 6, found
    assert [datetime.fromisoformat(line.split()[1]) for line in lines] == sorted(
        datetime.fromisoformat(line.split()[1]) for line in lines
    )
    assert all(datetime.now(UTC) - datetime.fromisoformat(line.split()[1]) < timedelta(hours=1) for line in lines)
    assert {line.split()[0] for line in lines} == {"[chatty-0]", "[chatty-1]"}
    exact = cli("app", "logs", "chatty", "--grep", "ERROR again", "--tail", "1")
    assert sorted(line.split(" ", 2)[2] for line in exact.out.splitlines()) == [
        "ERROR again on chatty-0",
        "ERROR again on chatty-1",
    ]
    bad = cli("app", "logs", "chatty", "--grep", "(")
    assert bad.code == 2, bad
    assert one_error_line(bad) == (
        "--grep: not a valid regular expression: missing ), unterminated subpattern at position 0"
    )
    alone = cli("app", "logs", "chatty", "-i")
    assert alone.code == 2 and "--ignore-case goes with --grep" in alone.err, alone
