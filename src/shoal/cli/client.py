"""boto3 clients for the CLI's client commands, pointed at a shoal server."""

from __future__ import annotations

import os
from typing import Any

import boto3

DEFAULT_ENDPOINT = "http://127.0.0.1:8000"


def endpoint(explicit: str | None) -> str:
    return explicit or os.environ.get("AWS_ENDPOINT_URL") or DEFAULT_ENDPOINT


def client(service: str, endpoint_url: str | None) -> Any:
    session = boto3.session.Session()
    region = session.region_name or "us-east-1"
    key = secret = None
    if session.get_credentials() is None:
        # shoal does not require credentials on loopback; the SDK still signs.
        key = secret = "shoal"
    factory: Any = session.client
    return factory(
        service,
        endpoint_url=endpoint(endpoint_url),
        region_name=region,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
    )
