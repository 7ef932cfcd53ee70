"""The AWS Batch operations: request path -> model operation -> use-case."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shoal.api.model import service_model
from shoal.domain.errors import InvalidRequest
from shoal.domain.records import Json
from shoal.service import (
    compute_environments,
    job_definitions,
    job_queues,
    jobs,
    scheduling_policies,
    submit,
    tags,
)
from shoal.service.context import Context


@dataclass(frozen=True, slots=True)
class Call:
    """What the wire adds to a request's parameters."""

    payload_size: int
    invocation_id: str | None


Handler = Callable[[Context, Json, Call], Json]


def _plain(fn: Callable[[Context, Json], Json]) -> Handler:
    return lambda ctx, params, call: fn(ctx, params)


def _submit(ctx: Context, params: Json, call: Call) -> Json:
    return submit.submit(ctx, params, payload_size=call.payload_size, token=call.invocation_id)


HANDLERS: dict[str, Handler] = {
    "CreateComputeEnvironment": _plain(compute_environments.create),
    "UpdateComputeEnvironment": _plain(compute_environments.update),
    "DeleteComputeEnvironment": _plain(compute_environments.delete),
    "DescribeComputeEnvironments": _plain(compute_environments.describe),
    "CreateJobQueue": _plain(job_queues.create),
    "UpdateJobQueue": _plain(job_queues.update),
    "DeleteJobQueue": _plain(job_queues.delete),
    "DescribeJobQueues": _plain(job_queues.describe),
    "GetJobQueueSnapshot": _plain(job_queues.snapshot),
    "RegisterJobDefinition": _plain(job_definitions.register),
    "DeregisterJobDefinition": _plain(job_definitions.deregister),
    "DescribeJobDefinitions": _plain(job_definitions.describe),
    "CreateSchedulingPolicy": _plain(scheduling_policies.create),
    "UpdateSchedulingPolicy": _plain(scheduling_policies.update),
    "DeleteSchedulingPolicy": _plain(scheduling_policies.delete),
    "DescribeSchedulingPolicies": _plain(scheduling_policies.describe),
    "ListSchedulingPolicies": _plain(scheduling_policies.list_policies),
    "SubmitJob": _submit,
    "DescribeJobs": _plain(jobs.describe),
    "ListJobs": _plain(jobs.list_jobs),
    "CancelJob": _plain(jobs.cancel),
    "TerminateJob": _plain(jobs.terminate),
    "CancelJobs": _plain(jobs.cancel_many),
    "TerminateJobs": _plain(jobs.terminate_many),
    "ListTagsForResource": _plain(tags.list_tags),
    "TagResource": _plain(tags.tag),
    "UntagResource": _plain(tags.untag),
}


def _unsupported(name: str) -> Handler:
    def handler(ctx: Context, params: Json, call: Call) -> Json:
        raise InvalidRequest(
            f"{name} is not supported by shoal: consumable resources, service environments, "
            "service jobs and quota shares are AWS-hosted features."
        )

    return handler


def _by_path() -> dict[str, str]:
    """`/v1/submitjob` -> `SubmitJob`, for every non-tag operation in the model."""
    model = service_model("batch")
    paths: dict[str, str] = {}
    for name in model.operation_names:
        uri = model.operation_model(name).http["requestUri"]
        if "{" not in uri:
            paths[uri] = name
    return paths


OPERATIONS_BY_PATH = _by_path()


def handler_for(name: str) -> Handler:
    return HANDLERS.get(name) or _unsupported(name)


def operation_model(name: str) -> Any:
    return service_model("batch").operation_model(name)
