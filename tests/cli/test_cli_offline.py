"""What the CLI does before (or without) a server answering: help, the command tree, shell
completion, colour, usage errors, the config file."""

from __future__ import annotations

import re
import subprocess

import click
import pytest

from hivemind.cli.main import cli as root
from tests.cli.conftest import closed_server, one_error_line

SGR = re.compile(r"\x1b\[[0-9;]*m")  # a colour or bold escape; the bar's cursor codes are not one


def command_paths(group: click.Group = root, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            paths += command_paths(command, (*prefix, name))
        else:
            paths.append((*prefix, name))
    return paths


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(p) or "hivemind")
def test_every_help_ends_with_an_example(cli, path):
    result = cli(*path, "--help")
    assert result.code == 0, result
    lines = result.out.rstrip().splitlines()
    start = max((i for i, line in enumerate(lines) if line.strip() == "Examples:"), default=None)
    assert start is not None, f"`hivemind {' '.join(path)} --help` has no Examples section"
    examples = lines[start + 1 :]
    assert examples, result
    assert all(line.strip().startswith(("hivemind ", "HIVEMIND_")) for line in examples), result


def test_unreachable_server_exits_3(cli):
    server = closed_server()
    result = cli("login", "--server", server, "--token", "hm_whatever")
    assert result.code == 3, result
    assert one_error_line(result) == f"cannot connect to {server} (is the platform running and the URL right?)"
    assert not cli.config.exists()


def test_health_of_unreachable_server_exits_3(cli):
    result = cli("--server", closed_server(), "health")
    assert result.code == 3, result
    assert one_error_line(result).startswith("cannot connect to")


def test_tenant_scoped_command_without_a_tenant_is_a_usage_error(cli):
    cli.write_config(
        {"current-context": "edge", "contexts": {"edge": {"server": closed_server(), "token": "t", "tenant": None}}}
    )
    for args in (("tenant", "member", "ls"), ("tenant", "member", "add", "bob", "--role", "viewer")):
        result = cli(*args)
        assert result.code == 2, result
        assert one_error_line(result) == "no tenant: pass --tenant or run `hivemind context use <tenant>`"


def test_login_without_any_token_is_a_usage_error(cli):
    result = cli("login", "--server", closed_server(), input="")
    assert result.code == 2, result
    assert (
        one_error_line(result) == "no token: pass --username (and give the password) or --token, or set HIVEMIND_TOKEN"
    )


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["--password-stdin"], "secret\n", "--password-stdin needs --username"),
        (["--username", "bob", "--password-stdin"], "", "--password-stdin: stdin was empty"),
        (["--username", "bob", "--token", "hm_x"], "", "give a token or a user name, not both"),
        (
            ["--username", "bob"],
            "",
            "no terminal to ask the password on: pipe it in with --password-stdin (and --username), or pass --token",
        ),
    ],
)
def test_bad_login_options_are_usage_errors(cli, args, stdin, message):
    result = cli("login", "--server", closed_server(), *args, input=stdin)
    assert result.code == 2, result
    assert one_error_line(result) == message
    assert not cli.config.exists()


def test_login_token_lifetime_is_checked_for_range(cli):
    for days in ("0", "366", "many"):
        result = cli("login", "--server", closed_server(), "--username", "bob", "--expires-in-days", days)
        assert result.code == 2, result
        assert "--expires-in-days" in result.err and "Traceback" not in result.err
    help_text = cli("login", "--help").out
    assert "1<=x<=365" in help_text and "default: 30" in help_text


def test_password_login_to_no_server_exits_3(cli):
    result = cli("login", "--server", closed_server(), "--username", "bob", "--password-stdin", input="pw\n")
    assert result.code == 3, result
    assert one_error_line(result).startswith("cannot connect to http://127.0.0.1:")


def test_not_logged_in_exits_4(cli):
    result = cli("tenant", "ls")
    assert result.code == 4, result
    assert one_error_line(result) == "not logged in to http://127.0.0.1:8000: run `hivemind login --server URL`"


def test_click_usage_errors_exit_2(cli):
    assert cli("tenant", "create", "Acme").code == 2  # --slug missing
    bad_label = cli("tenant", "create", "Acme", "--slug", "acme", "--label", "no-equals-sign")
    assert bad_label.code == 2, bad_label
    assert "expected KEY=VALUE" in bad_label.err
    assert cli("tenant", "member", "add", "bob", "--role", "king", "--tenant", "acme").code == 2
    assert cli("--server", "ftp://example.com", "health").code == 2


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("contexts: [unclosed", "not valid YAML at line 1"),
        ("- just\n- a list\n", "expected a mapping with 'current-context' and 'contexts', got list"),
        ("contexts:\n  edge: 3\n", "context 'edge' must be a mapping with server, token and tenant"),
        ("contexts:\n  edge: {server: http://x, tenant: acme}\n", "contexts.edge.token must be a non-empty string"),
        ("current-context: gone\ncontexts: {}\n", "current-context 'gone' is not one of the contexts"),
    ],
)
def test_malformed_config_names_the_file_and_the_problem(cli, content, problem):
    cli.write_config(content)
    result = cli("context", "ls")
    assert result.code == 1, result
    message = one_error_line(result)
    assert message.startswith(f"{cli.config}: "), message
    assert problem in message


def test_unknown_context_is_an_error(cli):
    cli.write_config({"current-context": None, "contexts": {}})
    result = cli("--context", "nope", "tenant", "ls")
    assert result.code == 1, result
    assert one_error_line(result) == f"no context 'nope' in {cli.config} (known: none)"


def test_delete_refuses_when_the_typed_slug_differs(cli):
    cli.write_config(
        {"current-context": "edge", "contexts": {"edge": {"server": closed_server(), "token": "t", "tenant": None}}}
    )
    result = cli("tenant", "delete", "acme", input="acne\n")
    assert result.code == 1, result
    assert "Type the slug (acme)" in result.err
    assert result.err.splitlines()[-1] == "error: the slug typed did not match; nothing was deleted"


def test_colour_only_on_a_terminal_and_never_with_no_color(cli):
    cli.write_config({"current-context": "edge", "contexts": {"edge": {"server": "http://h", "token": "t"}}})
    header = ["CURRENT", "NAME", "SERVER", "TENANT"]
    piped = cli("context", "ls")
    assert piped.code == 0, piped
    assert not SGR.search(piped.out), piped
    assert piped.out.splitlines()[0].split() == header

    shown = cli.on_terminal("context", "ls")
    assert shown.code == 0, shown
    assert "\x1b[1mCURRENT" in shown.out  # the header in bold

    plain = cli.on_terminal("context", "ls", env={"NO_COLOR": "1"})
    assert plain.code == 0, plain
    assert not SGR.search(plain.out), plain
    assert plain.out.splitlines()[0].split() == header


# The command tree -----------------------------------------------------------------------------

READS = {
    "ls", "info", "show", "usage", "revisions", "logs", "stats", "watch", "health", "snapshots", "replica", "history",
    "files", "restores",
}  # fmt: skip
STARTS_A_WORKFLOW = {
    "app deploy", "app scale", "app restart", "app rollback", "app update", "app delete",
    "volume create", "volume expand", "volume snapshot", "volume revert", "volume clone", "volume rm",
    "volume snapshot-rm", "volume replicate", "volume unreplicate", "volume promote",
    "backup run", "backup verify", "backup restore", "backup restore-platform",
}  # fmt: skip
# They change a workflow that exists (202 with it); --wait follows it, as README documents.
CHANGES_A_WORKFLOW = {"workflow cancel", "workflow retry"}
# Answered at once by the server (or by nothing: completion, context use).
CHANGES_AT_ONCE = {
    "login", "completion", "context use",
    "tenant create", "tenant suspend", "tenant resume", "tenant delete", "tenant member add", "tenant member rm",
    "node label", "node taint", "node cordon", "node uncordon", "node drain", "node rm",
    "user create", "user passwd", "user deactivate", "user activate",
    "network create", "network rm", "ip-pool create", "ip-pool rm", "pool add", "pool rm", "policy apply", "policy rm",
    "volume schedule",
    "notifier create", "notifier update", "notifier rm", "notifier test",
    "alert rules apply", "alert rules rm", "alert silence create", "alert silence expire", "alert test-notifier",
    "backup location add", "backup location update", "backup location check", "backup location rm",
    "backup location sync", "backup rm", "backup prune", "backup policy create", "backup policy update",
    "backup policy rm", "backup keys export", "backup keys import",
}  # fmt: skip
# Print a file made locally from the context's server address: no request, no token.
PRINTS_A_FILE = {"observability prometheus-config", "observability grafana-dashboard"}


def leaf_commands(group: click.Group = root, prefix: tuple[str, ...] = ()) -> dict[str, click.Command]:
    found: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        path = (*prefix, name)
        if isinstance(command, click.Group):
            found.update(leaf_commands(command, path))
        else:
            found[" ".join(path)] = command
    return found


def option(command: click.Command, flag: str) -> click.Option | None:
    return next((p for p in command.params if isinstance(p, click.Option) and flag in p.opts), None)


def kind_of(path: str) -> list[str]:
    """The classes `path` is in: a read (by its last word) or one of the sets above."""
    return [
        kind
        for kind, members in (
            ("read", {p for p in leaf_commands() if p.split()[-1] in READS}),
            ("starts a workflow", STARTS_A_WORKFLOW),
            ("changes a workflow", CHANGES_A_WORKFLOW),
            ("changes at once", CHANGES_AT_ONCE),
            ("prints a file", PRINTS_A_FILE),
        )
        if path in members
    ]


def test_every_command_is_audited_once():
    """A new command fails here until it is put in one class below, and so gets that class's checks."""
    unclassified = {path: kind_of(path) for path in leaf_commands() if len(kind_of(path)) != 1}
    assert unclassified == {}
    stale = (STARTS_A_WORKFLOW | CHANGES_A_WORKFLOW | CHANGES_AT_ONCE | PRINTS_A_FILE) - set(leaf_commands())
    assert stale == set()


@pytest.mark.parametrize("path", sorted(p for p in leaf_commands() if kind_of(p) == ["read"]))
def test_every_read_command_takes_output_table_json_yaml(path):
    output = option(leaf_commands()[path], "--output")
    assert output is not None, f"hivemind {path} has no --output"
    assert "-o" in output.opts
    assert isinstance(output.type, click.Choice)
    assert list(output.type.choices) == ["table", "json", "yaml"]
    assert output.get_default(click.Context(leaf_commands()[path])) == "table"


@pytest.mark.parametrize("path", sorted(STARTS_A_WORKFLOW | CHANGES_A_WORKFLOW))
def test_commands_that_start_a_workflow_wait_for_it_unless_told_not_to(path):
    command = leaf_commands()[path]
    flag = "--no-wait" if path in STARTS_A_WORKFLOW else "--wait"
    wait = option(command, flag)
    assert wait is not None and wait.is_flag, f"hivemind {path} has no {flag}"
    assert wait.get_default(click.Context(command)) is False  # off unless given
    assert option(command, "--output") is not None  # -o json prints the finished workflow


def test_a_bad_output_format_is_a_usage_error_naming_the_option(cli):
    result = cli("tenant", "ls", "-o", "xml")
    assert result.code == 2, result
    assert "Invalid value for '--output' / '-o': 'xml' is not one of 'table', 'json', 'yaml'." in result.err


# Shell completion -----------------------------------------------------------------------------


def complete(cli, shell: str, words: str, cword: str):
    """One <Tab>, asked the way the shell's script asks: `hivemind` with the completion variables set."""
    return cli(env={"_HIVEMIND_COMPLETE": f"{shell}_complete", "COMP_WORDS": words, "COMP_CWORD": cword})


def test_bash_completion_script_is_valid_and_completes_subcommands_and_choices(cli, tmp_path):
    script = cli("completion", "bash")
    assert script.code == 0, script
    assert "complete -o nosort -F _hivemind_completion hivemind" in script.out
    checked = subprocess.run(["bash", "-n"], input=script.out, capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr

    scale = complete(cli, "bash", "hivemind app sc", "2")
    assert (scale.code, scale.out.split()) == (0, ["plain,scale"]), scale
    formats = complete(cli, "bash", "hivemind app ls -o ", "4")
    assert formats.out.split() == ["plain,table", "plain,json", "plain,yaml"], formats

    # The script itself, sourced into bash, asks the installed command and fills COMPREPLY.
    path = tmp_path / "hivemind.bash"
    path.write_text(script.out)
    sourced = subprocess.run(
        [
            "bash", "-c",
            'source "$1"; COMP_WORDS=(hivemind app sc); COMP_CWORD=2; _hivemind_completion "$2"; '
            'printf "%s\\n" "${COMPREPLY[@]}"',
            "bash", str(path), cli.executable,
        ],
        capture_output=True, text=True, env=cli.env, timeout=30,
    )  # fmt: skip
    assert (sourced.returncode, sourced.stdout.split(), sourced.stderr) == (0, ["scale"], ""), sourced


@pytest.mark.parametrize(("shell", "marker"), [("zsh", "#compdef hivemind"), ("fish", "complete --no-files")])
def test_zsh_and_fish_completion_scripts(cli, shell, marker):
    script = cli("completion", shell)
    assert script.code == 0, script
    assert script.out.strip(), script
    assert "_hivemind_completion" in script.out
    assert marker in script.out
    assert f"_HIVEMIND_COMPLETE={shell}_complete" in script.out

    if shell == "zsh":  # type, value, help: three lines a completion
        answer = complete(cli, "zsh", "hivemind app sc", "2")
        assert answer.out.splitlines()[:2] == ["plain", "scale"], answer
    else:  # fish sends the word being completed as COMP_CWORD
        answer = complete(cli, "fish", "hivemind app sc", "sc")
        assert answer.out.splitlines()[0].split("\t")[0] == "plain,scale", answer


def test_completion_of_an_unknown_shell_is_a_usage_error(cli):
    result = cli("completion", "tcsh")
    assert result.code == 2, result
    assert "'tcsh' is not one of 'bash', 'zsh', 'fish'" in result.err
