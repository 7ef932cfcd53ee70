"""The EventBridge API (JSON 1.1, `X-Amz-Target: AWSEvents.*`): rules and targets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shoal.api.model import service_model
from shoal.domain.errors import InvalidRequest
from shoal.domain.records import Json
from shoal.service import events as uc
from shoal.service.context import Context

TARGET_PREFIX = "AWSEvents."

HANDLERS: dict[str, Callable[[Context, Json], Json]] = {
    "PutRule": uc.put_rule,
    "DescribeRule": uc.describe_rule,
    "ListRules": uc.list_rules,
    "DeleteRule": uc.delete_rule,
    "EnableRule": uc.enable_rule,
    "DisableRule": uc.disable_rule,
    "PutTargets": uc.put_targets,
    "RemoveTargets": uc.remove_targets,
    "ListTargetsByRule": uc.list_targets_by_rule,
    "TagResource": uc.tag_resource,
    "UntagResource": uc.untag_resource,
    "ListTagsForResource": uc.list_tags_for_resource,
}


def operation_model(name: str) -> Any:
    model = service_model("events")
    if name not in model.operation_names:
        return None
    return model.operation_model(name)


def handler(name: str) -> Callable[[Context, Json], Json]:
    found = HANDLERS.get(name)
    if found is None:
        raise InvalidRequest(
            f"EventBridge operation {name} is not supported by shoal (it serves scheduled "
            "rules and their targets)."
        )
    return found
