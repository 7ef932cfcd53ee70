"""aws_batch_scheduling_policy: fair-share policies, updated in place."""

from __future__ import annotations

from typing import Any

from shoal.terraform.resources import (
    Api,
    Change,
    Desired,
    Kind,
    Setting,
    as_float,
    as_int,
    as_str,
    blocks,
    compact,
    name_of,
    name_of_ref,
    normal,
    one_block,
    required,
    sync_tags,
    tag_changes,
    tags_of,
)


def _fair_share(block: dict[str, Any] | None) -> dict[str, Any] | None:
    if block is None:
        return None
    shares = [
        compact(
            {
                "shareIdentifier": as_str(
                    required(s.get("share_identifier"), "share_identifier"), "share_identifier"
                ),
                "weightFactor": as_float(s.get("weight_factor"), "weight_factor"),
            }
        )
        for s in blocks(block, "share_distribution")
    ]
    return compact(
        {
            "computeReservation": as_int(block.get("compute_reservation"), "compute_reservation"),
            "shareDecaySeconds": as_int(block.get("share_decay_seconds"), "share_decay_seconds"),
            "shareDistribution": shares or None,
        }
    )


def _comparable_policy(policy: Any) -> Any:
    doc = dict(normal(policy or {}))
    shares = doc.get("shareDistribution") or []
    doc["shareDistribution"] = sorted(
        (s["shareIdentifier"], float(s.get("weightFactor", 1.0))) for s in shares
    )
    return doc


class SchedulingPolicy(Kind):
    type = "aws_batch_scheduling_policy"
    rank = 20
    arguments = frozenset({"name", "fair_share_policy", "tags"})

    def desired(self, args: dict[str, Any], setting: Setting) -> Desired:
        name = name_of(args, setting, "name")
        request = compact(
            {"name": name, "fairsharePolicy": _fair_share(one_block(args, "fair_share_policy"))}
        )
        tags = tags_of(args, setting)
        if tags:
            request["tags"] = tags
        return Desired(name=name, request=request, tags=tags)

    def read(self, api: Api, want: Desired) -> Any | None:
        pages = api.batch.get_paginator("list_scheduling_policies")
        for page in pages.paginate():
            for item in page["schedulingPolicies"]:
                arn = item["arn"]
                if name_of_ref(arn) == want.name:
                    api.learn(arn)
                    found = api.batch.describe_scheduling_policies(arns=[arn])
                    policies: list[dict[str, Any]] = found["schedulingPolicies"]
                    return policies[0] if policies else None
        return None

    def changes(self, want: Desired, have: Any) -> list[Change]:
        out: list[Change] = []
        new, old = want.request.get("fairsharePolicy"), have.get("fairsharePolicy")
        if _comparable_policy(new) != _comparable_policy(old):
            out.append(
                Change(member="fairsharePolicy", argument="fair_share_policy", old=old, new=new)
            )
        return out + tag_changes(want.tags, have.get("tags"))

    def create(self, api: Api, want: Desired) -> dict[str, Any]:
        made = api.batch.create_scheduling_policy(**want.request)
        return {"arn": made["arn"], "id": made["arn"], "name": want.name}

    def update(self, api: Api, want: Desired, have: Any, changes: list[Change]) -> dict[str, Any]:
        if any(c.member == "fairsharePolicy" for c in changes):
            api.batch.update_scheduling_policy(
                arn=have["arn"], fairsharePolicy=want.request.get("fairsharePolicy") or {}
            )
        if any(c.member == "tags" for c in changes):
            sync_tags(api, have["arn"], want.tags, have.get("tags"))
        return self.attributes(api, want, have)

    def attributes(self, api: Api, want: Desired, have: Any | None) -> dict[str, Any]:
        arn = (have or {}).get("arn") or api.arn("batch", f"scheduling-policy/{want.name}")
        return {"arn": arn, "id": arn, "name": want.name}

    def delete(self, api: Api, want: Desired, have: Any) -> None:
        api.batch.delete_scheduling_policy(arn=have["arn"])
