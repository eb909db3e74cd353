"""What the CLI does before (or without) a server answering: help, usage errors, the config file."""

from __future__ import annotations

import os
import pty
import subprocess

import click
import pytest

from hivemind.cli.main import cli as root
from tests.cli.conftest import one_error_line
from tests.conftest import free_port


def command_paths(group: click.Group = root, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            paths += command_paths(command, (*prefix, name))
        else:
            paths.append((*prefix, name))
    return paths


def closed_server() -> str:
    return f"http://127.0.0.1:{free_port()}"


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(p) or "hivemind")
def test_every_help_ends_with_an_example(cli, path):
    result = cli(*path, "--help")
    assert result.code == 0, result
    lines = result.out.rstrip().splitlines()
    start = max(i for i, line in enumerate(lines) if line.strip() == "Example:")
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
    assert one_error_line(result) == "no token: pass --token, set HIVEMIND_TOKEN, or type it when asked"


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


def test_colour_only_on_a_terminal(cli):
    cli.write_config({"current-context": "edge", "contexts": {"edge": {"server": "http://h", "token": "t"}}})
    piped = cli("context", "ls")
    assert piped.code == 0, piped
    assert "\x1b[" not in piped.out
    assert piped.out.splitlines()[0].split() == ["CURRENT", "NAME", "SERVER", "TENANT"]

    main, terminal = pty.openpty()
    try:
        proc = subprocess.run(
            [cli.executable, "context", "ls"], stdout=terminal, stderr=subprocess.PIPE, env=cli.env, timeout=60
        )
        os.close(terminal)
        terminal = -1
        shown = b""
        while chunk := _read(main):
            shown += chunk
    finally:
        os.close(main)
        if terminal != -1:
            os.close(terminal)
    assert proc.returncode == 0, proc.stderr
    assert b"\x1b[1mCURRENT" in shown  # the header in bold


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except OSError:  # EIO: the terminal's other side is closed and drained
        return b""
