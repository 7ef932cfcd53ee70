"""The CloudWatch Logs API (JSON 1.1, `X-Amz-Target: Logs_20140328.*`), read side."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shoal.api.model import service_model
from shoal.domain.errors import InvalidRequest
from shoal.domain.records import Json
from shoal.logs.store import LogStore
from shoal.service import logs as uc
from shoal.service.context import Context

TARGET_PREFIX = "Logs_20140328."


def _arn_prefix(ctx: Context) -> str:
    return f"arn:aws:logs:{ctx.settings.region}:{ctx.settings.account_id}"


HANDLERS: dict[str, Callable[[Context, LogStore, Json], Json]] = {
    "GetLogEvents": lambda ctx, logs, req: uc.get_log_events(logs, req),
    "FilterLogEvents": lambda ctx, logs, req: uc.filter_log_events(logs, req),
    "DescribeLogStreams": lambda ctx, logs, req: uc.describe_log_streams(
        logs, req, _arn_prefix(ctx)
    ),
    "DescribeLogGroups": lambda ctx, logs, req: uc.describe_log_groups(logs, req, _arn_prefix(ctx)),
}


def operation_model(name: str) -> Any:
    model = service_model("logs")
    if name not in model.operation_names:
        return None
    return model.operation_model(name)


def handler(name: str) -> Callable[[Context, LogStore, Json], Json]:
    found = HANDLERS.get(name)
    if found is None:
        raise InvalidRequest(f"Logs operation {name} is not supported by shoal (it serves reads).")
    return found
