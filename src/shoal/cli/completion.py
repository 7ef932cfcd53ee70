"""`shoal completion SHELL`: the shell script of click's own completion.

The script calls `shoal` back with `_SHOAL_COMPLETE=<shell>_complete` set,
which click answers from the commands and options themselves, so it never
falls behind the CLI. Printing it here is what `_SHOAL_COMPLETE=bash_source
shoal` prints, without users having to know that spelling."""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

PROG = "shoal"
COMPLETE_VAR = "_SHOAL_COMPLETE"
SHELLS = ("bash", "zsh", "fish")


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL. Install it, e.g. for bash:

    shoal completion bash > ~/.local/share/bash-completion/completions/shoal
    """
    kind = get_completion_class(shell)
    if kind is None:  # click knows every shell of SHELLS; kept for the type checker
        raise click.ClickException(f"no completion for {shell}")
    root = ctx.find_root().command
    script = kind(root, {}, PROG, COMPLETE_VAR).source()
    click.echo(script, nl=not script.endswith("\n"))
