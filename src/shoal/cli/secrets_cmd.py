"""`shoal secrets put|list|delete`: the local secret store of a data directory.

Run on the host of the server that runs the jobs, with its data directory:
secrets are never sent over the API (so a stolen API key cannot read them),
and values are read from standard input, never from the command line (which
other users of the host can see).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from shoal.config import default_data_dir
from shoal.secrets import SecretStore

_DATA_DIR = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"The server's data directory [default: {default_data_dir()}].",
)


def _store(data_dir: Path | None) -> SecretStore:
    return SecretStore((data_dir or default_data_dir()) / "secrets")


@click.group()
def secrets() -> None:
    """Secrets that job definitions name in containerProperties.secrets."""


@secrets.command()
@click.argument("name")
@_DATA_DIR
def put(name: str, data_dir: Path | None) -> None:
    """Store NAME's value, read from standard input (a trailing newline is
    dropped). valueFrom may then be NAME, or a Secrets Manager or SSM
    parameter ARN ending in it."""
    value = sys.stdin.read()
    if value.endswith("\n"):
        value = value[:-1]
    try:
        _store(data_dir).put(name, value)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"stored secret {name}", err=True)


@secrets.command(name="list")
@_DATA_DIR
def list_(data_dir: Path | None) -> None:
    """The names of the stored secrets (never their values)."""
    for name in _store(data_dir).names():
        click.echo(name)


@secrets.command()
@click.argument("name")
@_DATA_DIR
def delete(name: str, data_dir: Path | None) -> None:
    """Remove NAME."""
    try:
        found = _store(data_dir).delete(name)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    if not found:
        raise click.ClickException(f"no secret {name}")
