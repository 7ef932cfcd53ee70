"""aws_batch_compute_environment: CreateComputeEnvironment and friends.

Compute environments are asynchronous on AWS and on shoal (CREATING or
UPDATING before VALID, DELETING before gone): creating or updating one waits
until it is VALID, as the AWS provider does, so queues only ever use VALID
ones. UpdateComputeEnvironment changes the state, the service role and the
capacity (min/max/desired vCPUs); any other change to computeResources is
reported as needing a new environment rather than ignored.
"""

from __future__ import annotations

from typing import Any

from shoal.terraform.resources import (
    Api,
    Change,
    Desired,
    Kind,
    ResourceError,
    Setting,
    as_bool,
    as_int,
    as_str,
    as_str_list,
    as_str_map,
    compact,
    name_of,
    name_of_ref,
    normal,
    one_block,
    required,
    sync_tags,
    tag_changes,
    tags_of,
    upper,
    wait_gone,
    wait_settled,
)

# (Terraform argument, API member, conversion) for compute_resources { ... }.
_RESOURCES: tuple[tuple[str, str, Any], ...] = (
    ("type", "type", lambda v, a: upper(as_str(v, a))),
    ("allocation_strategy", "allocationStrategy", lambda v, a: upper(as_str(v, a))),
    ("bid_percentage", "bidPercentage", as_int),
    ("min_vcpus", "minvCpus", as_int),
    ("max_vcpus", "maxvCpus", as_int),
    ("desired_vcpus", "desiredvCpus", as_int),
    ("ec2_key_pair", "ec2KeyPair", as_str),
    ("image_id", "imageId", as_str),
    ("instance_role", "instanceRole", as_str),
    ("placement_group", "placementGroup", as_str),
    ("spot_iam_fleet_role", "spotIamFleetRole", as_str),
    ("instance_type", "instanceTypes", as_str_list),
    ("subnets", "subnets", as_str_list),
    ("security_group_ids", "securityGroupIds", as_str_list),
    ("tags", "tags", as_str_map),
)
_ARGUMENT = {member: f"compute_resources.{arg}" for arg, member, _ in _RESOURCES}
_ARGUMENT.update(
    launchTemplate="compute_resources.launch_template",
    ec2Configuration="compute_resources.ec2_configuration",
)
# Sets in Terraform: their order means nothing.
_UNORDERED = ("instanceTypes", "subnets", "securityGroupIds")
# What UpdateComputeEnvironment changes in computeResources (shoal as AWS's
# classic update: capacity only; anything else needs a new environment).
_CAPACITY = ("minvCpus", "maxvCpus", "desiredvCpus")


def _compute_resources(block: dict[str, Any] | None) -> dict[str, Any] | None:
    if block is None:
        return None
    out = compact(
        {
            member: convert(block.get(arg), f"compute_resources.{arg}")
            for arg, member, convert in _RESOURCES
        }
    )
    template = block.get("launch_template")
    if template:
        lt = template[0]
        out["launchTemplate"] = compact(
            {
                "launchTemplateId": as_str(lt.get("launch_template_id"), "launch_template_id"),
                "launchTemplateName": as_str(
                    lt.get("launch_template_name"), "launch_template_name"
                ),
                "version": as_str(lt.get("version"), "version"),
            }
        )
    configs = block.get("ec2_configuration") or []
    if configs:
        out["ec2Configuration"] = [
            compact(
                {
                    "imageType": as_str(c.get("image_type"), "image_type"),
                    "imageIdOverride": as_str(c.get("image_id_override"), "image_id_override"),
                    "imageKubernetesVersion": as_str(
                        c.get("image_kubernetes_version"), "image_kubernetes_version"
                    ),
                }
            )
            for c in configs
        ]
    return out


def _comparable(member: str, value: Any) -> Any:
    if member in _UNORDERED and isinstance(value, list):
        return sorted(value)
    return normal(value)


def _describe_ce(api: Api, ref: str) -> dict[str, Any] | None:
    found = api.batch.describe_compute_environments(computeEnvironments=[ref])
    ces: list[dict[str, Any]] = found["computeEnvironments"]
    return ces[0] if ces else None


def wait_ce_valid(api: Api, ref: str) -> None:
    def probe() -> tuple[bool, str]:
        ce = _describe_ce(api, ref)
        if ce is None:
            raise ResourceError(f"compute environment {name_of_ref(ref)} does not exist")
        if ce.get("status") == "INVALID":
            raise ResourceError(
                f"compute environment {ce['computeEnvironmentName']} is INVALID: "
                f"{ce.get('statusReason', '')}"
            )
        return ce.get("status") == "VALID", str(ce.get("status"))

    api.wait(f"compute environment {name_of_ref(ref)} to be VALID", probe)


class ComputeEnvironment(Kind):
    type = "aws_batch_compute_environment"
    rank = 10
    arguments = frozenset(
        {
            "compute_environment_name",
            "compute_environment_name_prefix",
            "name",
            "name_prefix",
            "type",
            "state",
            "service_role",
            "compute_resources",
            "unmanaged_vcpus",
            "update_policy",
            "tags",
        }
    )

    def desired(self, args: dict[str, Any], setting: Setting) -> Desired:
        name = name_of(args, setting, "compute_environment_name", "name")
        policy = one_block(args, "update_policy")
        request = compact(
            {
                "computeEnvironmentName": name,
                "type": upper(as_str(required(args.get("type"), "type"), "type")),
                "state": upper(as_str(args.get("state"), "state")),
                "serviceRole": as_str(args.get("service_role"), "service_role"),
                "unmanagedvCpus": as_int(args.get("unmanaged_vcpus"), "unmanaged_vcpus"),
                "computeResources": _compute_resources(one_block(args, "compute_resources")),
                "updatePolicy": None
                if policy is None
                else compact(
                    {
                        "terminateJobsOnUpdate": as_bool(
                            policy.get("terminate_jobs_on_update"), "terminate_jobs_on_update"
                        ),
                        "jobExecutionTimeoutMinutes": as_int(
                            policy.get("job_execution_timeout_minutes"),
                            "job_execution_timeout_minutes",
                        ),
                    }
                ),
            }
        )
        tags = tags_of(args, setting)
        if tags:
            request["tags"] = tags
        return Desired(name=name, request=request, tags=tags)

    def read(self, api: Api, want: Desired) -> Any | None:
        ce = _describe_ce(api, want.name)
        if ce is not None:
            api.learn(ce.get("computeEnvironmentArn"))
        if ce is None or ce.get("status") in ("DELETING", "DELETED"):
            return None
        return ce

    def changes(self, want: Desired, have: Any) -> list[Change]:
        req = want.request
        out: list[Change] = []

        def check(member: str, argument: str, new: Any, old: Any, in_place: bool) -> None:
            if _comparable(member, new) != _comparable(member, old):
                out.append(
                    Change(member=member, argument=argument, old=old, new=new, in_place=in_place)
                )

        check("type", "type", req["type"], have.get("type"), False)
        check("state", "state", req.get("state", "ENABLED"), have.get("state"), True)
        for member, argument in (
            ("serviceRole", "service_role"),
            ("unmanagedvCpus", "unmanaged_vcpus"),
            ("updatePolicy", "update_policy"),
        ):
            if member in req:
                check(member, argument, req[member], have.get(member), True)
        want_cr = req.get("computeResources") or {}
        have_cr = have.get("computeResources") or {}
        for member in dict.fromkeys([*want_cr, *have_cr]):
            new, old = want_cr.get(member), have_cr.get(member)
            if new is None and (member in _CAPACITY or normal(old) in (None, [], {})):
                continue  # optional and computed: not writing it keeps what is there
            check(
                f"computeResources.{member}",
                _ARGUMENT.get(member, f"compute_resources.{member}"),
                new,
                old,
                member in _CAPACITY,
            )
        return out + tag_changes(want.tags, have.get("tags"))

    def create(self, api: Api, want: Desired) -> dict[str, Any]:
        wait_gone(
            api,
            f"compute environment {want.name} to be deleted",
            lambda: _describe_ce(api, want.name),
        )
        api.batch.create_compute_environment(**want.request)
        wait_ce_valid(api, want.name)
        return self.attributes(api, want, _describe_ce(api, want.name))

    def update(self, api: Api, want: Desired, have: Any, changes: list[Change]) -> dict[str, Any]:
        request: dict[str, Any] = {"computeEnvironment": want.name}
        resources: dict[str, Any] = {}
        for change in changes:
            if change.member == "tags":
                continue
            if change.member.startswith("computeResources."):
                resources[change.member.split(".", 1)[1]] = change.new
            else:
                request[change.member] = change.new
        if resources:
            request["computeResources"] = resources
        if len(request) > 1:
            api.batch.update_compute_environment(**request)
            wait_ce_valid(api, want.name)
        if any(c.member == "tags" for c in changes):
            sync_tags(api, have["computeEnvironmentArn"], want.tags, have.get("tags"))
        return self.attributes(api, want, _describe_ce(api, want.name))

    def attributes(self, api: Api, want: Desired, have: Any | None) -> dict[str, Any]:
        arn = (have or {}).get("computeEnvironmentArn") or api.arn(
            "batch", f"compute-environment/{want.name}"
        )
        return compact(
            {
                "arn": arn,
                "id": want.name,
                "name": want.name,
                "compute_environment_name": want.name,
                "ecs_cluster_arn": (have or {}).get("ecsClusterArn"),
                "status": (have or {}).get("status"),
                "status_reason": (have or {}).get("statusReason"),
            }
        )

    def delete(self, api: Api, want: Desired, have: Any) -> None:
        def describe() -> dict[str, Any] | None:
            return _describe_ce(api, want.name)

        if have.get("state") != "DISABLED":
            api.batch.update_compute_environment(computeEnvironment=want.name, state="DISABLED")
        wait_settled(api, f"compute environment {want.name} to be disabled", describe)
        api.batch.delete_compute_environment(computeEnvironment=want.name)
        wait_gone(api, f"compute environment {want.name} to be deleted", describe)
