"""`hivemind policy` as subprocesses against the real web process (gunicorn); bad files are
checked with no server at all (exit 2, never 3: nothing is sent)."""

from __future__ import annotations

import json

import pytest
import yaml

from hivemind.cli import policies as cli_policies
from hivemind.cli.errors import ApiError
from hivemind.cli.policies import PolicyTarget
from networking import services
from networking.models import NetworkPolicy
from tests.cli.conftest import login_as, one_error_line

NOWHERE = "http://127.0.0.1:9"  # nothing listens: a file checked only by the server would exit 3, not 2

WEB = """\
name: web-ingress
apps: [web]
ingress:
- from:
  - app: api
  - network: backend
  - cidr: 192.0.2.7/24
  ports:
  - {protocol: tcp, port: 80}
"""
WEB_SPEC = {
    "apps": ["web"],
    "labels": {},
    "ingress": [
        {
            "from": [{"app": "api"}, {"network": "backend"}, {"cidr": "192.0.2.0/24"}],
            "ports": [{"protocol": "tcp", "port": 80}],
        }
    ],
}
WEB_WARNINGS = [
    "apps: no app named web in tenant tenant-a (the policy selects nothing for it)",
    "ingress[0].from[0]: no app named api",
    "ingress[0].from[1]: no network named backend",
]


def rows(result) -> list[list[str]]:
    return [line.split() for line in result.out.splitlines()[1:]]


def policies(tenant) -> dict[str, dict]:
    return dict(NetworkPolicy.objects.filter(tenant=tenant).values_list("name", "spec"))


def test_apply_from_files_and_stdin_then_ls_info_and_rm(cli, web_server, world, tmp_path):
    login_as(cli, web_server, world, "operator")
    path = tmp_path / "web.yaml"
    path.write_text(WEB)

    created = cli("policy", "apply", "-f", str(path))
    assert created.code == 0, created
    assert created.out == "policy/web-ingress created\n"
    assert created.err.splitlines() == [f"warning: policy/web-ingress: {w}" for w in WEB_WARNINGS]
    assert policies(world.a) == {"web-ingress": WEB_SPEC}

    # Again, with the spec changed: replaced by name, kubectl's `configured`.
    path.write_text(WEB.replace("port: 80", "port: 8080"))
    again = cli("policy", "apply", "-f", str(path))
    assert again.code == 0, again
    assert again.out == "policy/web-ingress configured\n"
    assert policies(world.a)["web-ingress"]["ingress"][0]["ports"] == [{"protocol": "tcp", "port": 8080}]
    assert NetworkPolicy.objects.filter(tenant=world.a).count() == 1

    # JSON on stdin, a list of two: one new, one that exists; no warnings once nothing is missing.
    piped = [
        {"name": "deny-egress", "egress": []},
        {"name": "web-ingress", "apps": [], "ingress": [{"from": [{"cidr": "10.0.0.0/8"}]}]},
    ]
    from_stdin = cli("policy", "apply", "-f", "-", input=json.dumps(piped))
    assert from_stdin.code == 0, from_stdin
    assert from_stdin.out == "policy/deny-egress created\npolicy/web-ingress configured\n"
    assert all(line.startswith("warning: policy/") for line in from_stdin.err.splitlines()), from_stdin
    assert "no network named" not in from_stdin.err
    assert policies(world.a) == {
        "deny-egress": {"apps": [], "labels": {}, "egress": []},
        "web-ingress": {"apps": [], "labels": {}, "ingress": [{"from": [{"cidr": "10.0.0.0/8"}], "ports": []}]},
    }

    # Several YAML documents, -o json: the API's objects.
    path.write_text(WEB + "---\n" + "name: db\napps: [db]\negress: [{to: [{app: web}]}]\n")
    as_json = cli("policy", "apply", "-f", str(path), "-o", "json")
    assert as_json.code == 0, as_json
    assert [(p["name"], p["spec"]) for p in json.loads(as_json.out)] == [
        ("web-ingress", WEB_SPEC),
        ("db", {"apps": ["db"], "labels": {}, "egress": [{"to": [{"app": "web"}], "ports": []}]}),
    ]

    listed = cli("policy", "ls")
    assert listed.code == 0, listed
    assert listed.out.splitlines()[0].split() == ["NAME", "APPS", "INGRESS", "EGRESS", "AGE"]
    assert [r[:4] for r in rows(listed)] == [
        ["db", "db", "-", "1"],
        ["deny-egress", "(all)", "-", "0"],
        ["web-ingress", "web", "1", "-"],
    ]
    listed_json = json.loads(cli("policy", "ls", "-o", "json").out)
    assert [p["name"] for p in listed_json] == ["db", "deny-egress", "web-ingress"]
    assert yaml.safe_load(cli("policy", "ls", "-o", "yaml").out) == listed_json

    # info: the spec as a document `apply -f` takes back, the warnings as comments.
    info = cli("policy", "info", "web-ingress")
    assert info.code == 0, info
    assert info.out.startswith("# Network policy web-ingress in tenant tenant-a; created ")
    assert yaml.safe_load(info.out) == {"name": "web-ingress", **WEB_SPEC}
    assert info.out.split("\n\n")[1].splitlines() == [
        "# Warnings (it matches nothing for these):",
        *(f"#   {w}" for w in WEB_WARNINGS),
    ]
    detail = yaml.safe_load(cli("policy", "info", "web-ingress", "-o", "yaml").out)
    assert (detail["spec"], detail["warnings"], detail["tenant"]) == (WEB_SPEC, WEB_WARNINGS, "tenant-a")
    saved = tmp_path / "saved.yaml"
    saved.write_text(info.out)
    round_trip = cli("policy", "apply", "-f", str(saved))
    assert round_trip.code == 0 and round_trip.out == "policy/web-ingress configured\n", round_trip
    assert policies(world.a)["web-ingress"] == WEB_SPEC

    mistyped = cli("policy", "rm", "db", input="bd\n")
    assert mistyped.code == 1, mistyped
    assert mistyped.err.splitlines()[-1] == "error: the name typed did not match; nothing was deleted"
    removed = cli("policy", "rm", "db", input="db\n")
    assert removed.code == 0, removed
    assert removed.out == "Deleted policy db from tenant tenant-a.\n"
    assert cli("policy", "rm", "deny-egress", "--yes").code == 0
    assert set(policies(world.a)) == {"web-ingress"}
    gone = cli("policy", "info", "db")
    assert gone.code == 6, gone
    assert one_error_line(gone) == "policy db not found in tenant tenant-a"


def test_a_spec_the_server_refuses_exits_1_naming_the_field(cli, web_server, world, tmp_path):
    login_as(cli, web_server, world, "operator")
    path = tmp_path / "bad.yaml"
    path.write_text(WEB.replace("port: 80", "port: 70000"))
    refused = cli("policy", "apply", "-f", str(path))
    assert refused.code == 1, refused
    assert one_error_line(refused) == (
        f"policy/web-ingress ({path}): ingress[0].ports[0].port: expected a port from 1 to 65535, got '70000'"
    )
    assert refused.out == ""
    assert policies(world.a) == {}

    # The others in the file are still applied; the exit says one was not.
    both = tmp_path / "both.yaml"
    both.write_text("- {name: ok, egress: []}\n- {name: bad, ingress: [{from: [{cidr: nope}]}]}\n")
    partly = cli("policy", "apply", "-f", str(both))
    assert partly.code == 1, partly
    assert partly.out == "policy/ok created\n"
    assert partly.err.splitlines() == [
        "warning: policy/ok: apps: the tenant has no app yet (the policy selects nothing)",
        f"error: policy/bad ({both}: item 2): ingress[0].from[0].cidr: expected an IPv4 or IPv6 prefix, got 'nope'",
    ]
    assert set(policies(world.a)) == {"ok"}

    unknown = cli("policy", "apply", "-f", "-", input="name: x\nkind: NetworkPolicy\negress: []\n")
    assert unknown.code == 1, unknown
    assert one_error_line(unknown) == ("policy/x (stdin): spec: unknown field(s): kind; expected apps, ingress, egress")


def test_another_tenants_policy_is_not_found_and_a_viewer_only_looks(cli, web_server, world, tmp_path):
    staff = world.users["staff"]
    services.policy_apply(tenant=world.b, name="secret", spec={"egress": []}, actor=staff)
    services.policy_apply(tenant=world.a, name="mine", spec={"apps": ["web"], "ingress": []}, actor=staff)
    login_as(cli, web_server, world, "viewer")

    listed = cli("policy", "ls")
    assert listed.code == 0, listed
    assert [r[:4] for r in rows(listed)] == [["mine", "web", "0", "-"]]
    for args in (("info", "secret"), ("rm", "secret", "--yes")):
        result = cli("policy", *args)
        assert result.code == 6, (args, result)
        assert one_error_line(result) == "policy secret not found in tenant tenant-a"
    other = cli("policy", "ls", "--tenant", "tenant-b")
    assert other.code == 6, other
    assert one_error_line(other) == "tenant tenant-b not found"
    assert cli("policy", "info", "mine").code == 0

    path = tmp_path / "p.yaml"
    path.write_text("name: new\negress: []\n---\nname: mine\negress: []\n")
    refused = cli("policy", "apply", "-f", str(path))
    assert refused.code == 5, refused
    assert one_error_line(refused) == "policy/new: you may not add a network policy in tenant tenant-a"
    path.write_text("name: mine\negress: []\n")
    refused_change = cli("policy", "apply", "-f", str(path))
    assert refused_change.code == 5, refused_change
    assert one_error_line(refused_change) == "policy/mine: you may not change this network policy"
    refused_rm = cli("policy", "rm", "mine", "--yes")
    assert refused_rm.code == 5, refused_rm
    assert policies(world.a) == {"mine": {"apps": ["web"], "labels": {}, "ingress": []}}
    assert set(policies(world.b)) == {"secret"}


BAD_FILES = [
    ("bad.yaml", "name: web\ningress: [unclosed\n", "not valid YAML or JSON at line 3, column 1:"),
    ("bad.json", '{"name": "web", "egress": [}', "not valid JSON at line 1, column 28: Expecting value"),
    ("noname.yaml", "apps: [web]\negress: []\n", "no `name`: every policy needs one"),
    ("badname.yaml", "name: Web_1\negress: []\n", "name: expected a DNS label"),
    ("scalar.yaml", "just text\n", "expected a policy (a mapping with name, apps, ingress, egress), got str"),
    ("empty.yaml", "# nothing\n", "no policy in it"),
    ("binary.yaml", b"name: \xff\xfe\n", "not UTF-8 text"),
    ("twice.yaml", "name: a\negress: []\n---\nname: a\negress: []\n", "document 2: policy a is also in"),
    ("bomb.yaml", "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8)
    ) + "name: boom\n", "more than 100000 values"),
]  # fmt: skip


@pytest.mark.parametrize(("filename", "content", "problem"), BAD_FILES, ids=[f[0] for f in BAD_FILES])
def test_a_bad_file_exits_2_naming_it_before_anything_is_sent(cli, tmp_path, filename, content, problem):
    path = tmp_path / filename
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    result = cli("--server", NOWHERE, "--token", "t", "policy", "apply", "-f", str(path), "--tenant", "tenant-a")
    assert result.code == 2, result
    message = one_error_line(result)
    assert message.startswith(f"{path}: "), message
    assert problem in message, message


def test_stdin_and_missing_files_are_named_too(cli):
    piped = cli("--server", NOWHERE, "--token", "t", "policy", "apply", "-f", "-", input="- [1, 2\n")
    assert piped.code == 2, piped
    assert one_error_line(piped).startswith("stdin: not valid YAML or JSON at line 2")
    missing = cli("--server", NOWHERE, "--token", "t", "policy", "apply", "-f", "/nonexistent/p.yaml")
    assert missing.code == 2, missing
    assert one_error_line(missing) == "/nonexistent/p.yaml: cannot read: No such file or directory"
    twice = cli("--server", NOWHERE, "--token", "t", "policy", "apply", "-f", "-", "-f", "-", input="")
    assert twice.code == 2 and one_error_line(twice) == "-f -: stdin can be read once", twice
    none = cli("--server", NOWHERE, "--token", "t", "policy", "apply")
    assert none.code == 2 and "Missing option '--filename' / '-f'" in none.err, none


class RacingClient:
    """Answers as the server would when another client made `web` between our list and our POST."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def post(self, path, body):
        self.sent.append(("POST", path))
        raise ApiError("name: a policy named web exists; PATCH it", 400)

    def request(self, method, path, json=None):
        self.sent.append((method, path))
        return {"name": "web", "spec": json["spec"], "warnings": []}


def test_apply_takes_the_other_request_when_the_policy_appeared_meanwhile():
    target = PolicyTarget.__new__(PolicyTarget)
    target.tenant, target.client = "tenant-a", RacingClient()
    target.all = lambda: [{"id": 7, "name": "web"}]
    doc = cli_policies.Document(where="p.yaml", name="web", spec={"egress": []})
    result, verb = cli_policies._apply_one(target, doc, {})
    assert (result["name"], verb) == ("web", "configured")
    assert target.client.sent == [("POST", "/api/v1/network-policies/"), ("PATCH", "/api/v1/network-policies/7/")]

    # Not a race: the name is still free, so the server's refusal is the answer.
    target.all = lambda: []
    with pytest.raises(ApiError, match="a policy named web exists"):
        cli_policies._apply_one(target, doc, {})
