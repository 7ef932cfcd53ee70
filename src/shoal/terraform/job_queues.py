"""aws_batch_job_queue: CreateJobQueue and friends.

A queue is created only once the compute environments it lists are VALID,
and waited for until it is VALID itself. Its priority, state, compute
environment order and time-limit actions change in place; whether it is a
FIFO or a fair-share queue cannot change.
"""

from __future__ import annotations

from typing import Any

from shoal.terraform.compute_environments import wait_ce_valid
from shoal.terraform.resources import (
    Api,
    Change,
    Desired,
    Kind,
    ResourceError,
    Setting,
    as_int,
    as_str,
    as_str_list,
    blocks,
    compact,
    name_of,
    name_of_ref,
    normal,
    required,
    sync_tags,
    tag_changes,
    tags_of,
    upper,
    wait_gone,
    wait_settled,
)


def _describe_queue(api: Api, ref: str) -> dict[str, Any] | None:
    queues: list[dict[str, Any]] = api.batch.describe_job_queues(jobQueues=[ref])["jobQueues"]
    return queues[0] if queues else None


def _order_key(entries: Any) -> list[tuple[int, str]]:
    return sorted((int(e["order"]), name_of_ref(str(e["computeEnvironment"]))) for e in entries)


class JobQueue(Kind):
    type = "aws_batch_job_queue"
    rank = 30
    arguments = frozenset(
        {
            "name",
            "state",
            "priority",
            "compute_environment_order",
            "compute_environments",
            "scheduling_policy_arn",
            "job_state_time_limit_action",
            "tags",
            "timeouts",
        }
    )

    def desired(self, args: dict[str, Any], setting: Setting) -> Desired:
        name = name_of(args, setting, "name")
        order = [
            {
                "order": as_int(required(b.get("order"), "order"), "order"),
                "computeEnvironment": as_str(
                    required(b.get("compute_environment"), "compute_environment"),
                    "compute_environment",
                ),
            }
            for b in blocks(args, "compute_environment_order")
        ]
        if not order:
            # The provider's older form: a list, in order (from 0, as it sends).
            listed = as_str_list(args.get("compute_environments"), "compute_environments") or []
            order = [{"order": i, "computeEnvironment": ce} for i, ce in enumerate(listed)]
        if not order:
            raise ResourceError("a job queue needs compute_environment_order blocks")
        actions = [
            compact(
                {
                    "action": as_str(b.get("action"), "action"),
                    "maxTimeSeconds": as_int(b.get("max_time_seconds"), "max_time_seconds"),
                    "reason": as_str(b.get("reason"), "reason"),
                    "state": as_str(b.get("state"), "state"),
                }
            )
            for b in blocks(args, "job_state_time_limit_action")
        ]
        request = compact(
            {
                "jobQueueName": name,
                "state": upper(as_str(args.get("state"), "state")) or "ENABLED",
                "priority": as_int(required(args.get("priority"), "priority"), "priority"),
                "computeEnvironmentOrder": order,
                "schedulingPolicyArn": as_str(
                    args.get("scheduling_policy_arn"), "scheduling_policy_arn"
                ),
                "jobStateTimeLimitActions": actions or None,
            }
        )
        tags = tags_of(args, setting)
        if tags:
            request["tags"] = tags
        return Desired(name=name, request=request, tags=tags)

    def read(self, api: Api, want: Desired) -> Any | None:
        queue = _describe_queue(api, want.name)
        if queue is not None:
            api.learn(queue.get("jobQueueArn"))
        if queue is None or queue.get("status") in ("DELETING", "DELETED"):
            return None
        return queue

    def changes(self, want: Desired, have: Any) -> list[Change]:
        req = want.request
        out: list[Change] = []
        for member, argument in (("priority", "priority"), ("state", "state")):
            if req.get(member) != have.get(member):
                out.append(
                    Change(member=member, argument=argument, old=have.get(member), new=req[member])
                )
        if _order_key(req["computeEnvironmentOrder"]) != _order_key(
            have.get("computeEnvironmentOrder") or []
        ):
            out.append(
                Change(
                    member="computeEnvironmentOrder",
                    argument="compute_environment_order",
                    old=have.get("computeEnvironmentOrder"),
                    new=req["computeEnvironmentOrder"],
                )
            )
        new_policy, old_policy = req.get("schedulingPolicyArn"), have.get("schedulingPolicyArn")
        if (new_policy and name_of_ref(new_policy)) != (old_policy and name_of_ref(old_policy)):
            # A queue is FIFO or fair share for life; only the policy can change.
            out.append(
                Change(
                    member="schedulingPolicyArn",
                    argument="scheduling_policy_arn",
                    old=old_policy,
                    new=new_policy,
                    in_place=bool(new_policy and old_policy),
                )
            )
        new_actions = req.get("jobStateTimeLimitActions") or []
        if normal(new_actions) != normal(have.get("jobStateTimeLimitActions") or []):
            out.append(
                Change(
                    member="jobStateTimeLimitActions",
                    argument="job_state_time_limit_action",
                    old=have.get("jobStateTimeLimitActions"),
                    new=new_actions,
                )
            )
        return out + tag_changes(want.tags, have.get("tags"))

    def _wait_environments(self, api: Api, want: Desired) -> None:
        for entry in want.request["computeEnvironmentOrder"]:
            wait_ce_valid(api, entry["computeEnvironment"])

    def _wait_valid(self, api: Api, name: str) -> None:
        def probe() -> tuple[bool, str]:
            queue = _describe_queue(api, name)
            if queue is None:
                raise ResourceError(f"job queue {name} disappeared")
            if queue.get("status") == "INVALID":
                raise ResourceError(f"job queue {name} is INVALID: {queue.get('statusReason')}")
            return queue.get("status") == "VALID", str(queue.get("status"))

        api.wait(f"job queue {name} to be VALID", probe)

    def create(self, api: Api, want: Desired) -> dict[str, Any]:
        wait_gone(
            api, f"job queue {want.name} to be deleted", lambda: _describe_queue(api, want.name)
        )
        self._wait_environments(api, want)
        api.batch.create_job_queue(**want.request)
        self._wait_valid(api, want.name)
        return self.attributes(api, want, _describe_queue(api, want.name))

    def update(self, api: Api, want: Desired, have: Any, changes: list[Change]) -> dict[str, Any]:
        request: dict[str, Any] = {"jobQueue": want.name}
        for change in changes:
            if change.member != "tags":
                request[change.member] = change.new
        if len(request) > 1:
            if "computeEnvironmentOrder" in request:
                self._wait_environments(api, want)
            api.batch.update_job_queue(**request)
            self._wait_valid(api, want.name)
        if any(c.member == "tags" for c in changes):
            sync_tags(api, have["jobQueueArn"], want.tags, have.get("tags"))
        return self.attributes(api, want, _describe_queue(api, want.name))

    def attributes(self, api: Api, want: Desired, have: Any | None) -> dict[str, Any]:
        arn = (have or {}).get("jobQueueArn") or api.arn("batch", f"job-queue/{want.name}")
        return {"arn": arn, "id": arn, "name": want.name}

    def delete(self, api: Api, want: Desired, have: Any) -> None:
        def describe() -> dict[str, Any] | None:
            return _describe_queue(api, want.name)

        if have.get("state") != "DISABLED":
            api.batch.update_job_queue(jobQueue=want.name, state="DISABLED")
        wait_settled(api, f"job queue {want.name} to be disabled", describe)
        api.batch.delete_job_queue(jobQueue=want.name)
        wait_gone(api, f"job queue {want.name} to be deleted", describe)
