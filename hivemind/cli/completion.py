"""`hivemind completion bash|zsh|fish`: the script that lets a shell complete commands and options.

The script is click's own. On every <Tab> the shell runs `hivemind` again with
_HIVEMIND_COMPLETE set and the words typed so far; click answers from the live command tree,
so the script never goes stale when commands are added. Completing asks no server.
"""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

from hivemind.cli.output import examples

PROG_NAME = "hivemind"
# The variable click's main() looks for: `_{PROG_NAME}_COMPLETE`, upper case.
COMPLETE_VAR = f"_{PROG_NAME}_COMPLETE".upper()
SHELLS = ("bash", "zsh", "fish")


def completion_script(root: click.Command, shell: str) -> str:
    """The shell's script for `root`; the function it defines is `_hivemind_completion`."""
    complete = get_completion_class(shell)
    if complete is None:  # pragma: no cover - SHELLS are all click's own
        raise click.UsageError(f"no completion for {shell}")
    return complete(root, {}, PROG_NAME, COMPLETE_VAR).source()


@click.command(
    epilog=examples(
        "hivemind completion bash > ~/.local/share/bash-completion/completions/hivemind",
        "hivemind completion zsh > ~/.zfunc/_hivemind",
        "hivemind completion fish > ~/.config/fish/completions/hivemind.fish",
    )
)
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the shell completion script for SHELL; install it once, then open a new shell.

    \b
    bash: save it as ~/.local/share/bash-completion/completions/hivemind
          (needs the bash-completion package; bash 4.4 or later), or add
          eval "$(hivemind completion bash)" to ~/.bashrc
    zsh:  add eval "$(hivemind completion zsh)" to ~/.zshrc after compinit, or
          save it as _hivemind in a directory on $fpath
    fish: save it as ~/.config/fish/completions/hivemind.fish
    """
    click.echo(completion_script(ctx.find_root().command, shell))
