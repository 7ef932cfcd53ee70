"""What the everyday client commands share: the --endpoint-url option, the
Batch client, JSON output and one-line errors instead of tracebacks."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import click

ENDPOINT = click.option(
    "--endpoint-url",
    default=None,
    metavar="URL",
    help="shoal server [default: $AWS_ENDPOINT_URL, else http://127.0.0.1:8000].",
)


class NotFound(Exception):
    """Something the user named is not there. DescribeJobs says so by
    leaving it out rather than by an error, so the CLI words it itself."""


def batch(endpoint_url: str | None) -> Any:
    from shoal.cli.client import client

    return client("batch", endpoint_url)


def message_of(error: Exception) -> str:
    """An error on one line: for a ClientException the server's message
    alone (the caller's mistake, as AWS words it), for any other code the
    code too (ServerException: ...)."""
    from botocore.exceptions import ClientError

    if not isinstance(error, ClientError):
        return " ".join(str(error).split())
    detail = error.response.get("Error") or {}
    code = str(detail.get("Code") or "")
    text = " ".join(str(detail.get("Message") or error).split())
    return text if code in ("", "ClientException") else f"{code}: {text}"


def unreachable(endpoint_url: str | None) -> str:
    from shoal.cli.client import endpoint

    return f"cannot reach the shoal server at {endpoint(endpoint_url)}"


@contextlib.contextmanager
def server_errors(endpoint_url: str | None) -> Iterator[None]:
    """What can go wrong talking to the server, as `Error: ...` on one line
    and exit status 1."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
    )

    try:
        yield
    except ClientError as e:
        raise click.ClickException(message_of(e)) from None
    except (EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError):
        raise click.ClickException(unreachable(endpoint_url)) from None
    except BotoCoreError as e:
        # e.g. a parameter the SDK refuses before sending it, or a read timeout.
        raise click.ClickException(message_of(e)) from None
    except NotFound as e:
        raise click.ClickException(str(e)) from None


def plain(reply: dict[str, Any]) -> dict[str, Any]:
    """A boto3 reply without the SDK's ResponseMetadata: what the server sent."""
    return {k: v for k, v in reply.items() if k != "ResponseMetadata"}


def echo_json(doc: object) -> None:
    click.echo(json.dumps(doc, indent=2))


def assignments(items: tuple[str, ...], option: str) -> dict[str, str]:
    """NAME=VALUE options (`option` names them in the error)."""
    pairs: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint=option)
        pairs[name] = value
    return pairs
