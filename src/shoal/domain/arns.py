"""ARNs and identifiers, in AWS's shapes."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from shoal.domain.errors import InvalidRequest

# Resource names (compute environments, queues, definitions, policies).
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
# Job names additionally start with a letter or digit.
JOB_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")

_ARN_RE = re.compile(
    r"^arn:(?P<partition>[a-z-]+):batch:(?P<region>[a-z0-9-]*):(?P<account>\d*):"
    r"(?P<kind>compute-environment|job-queue|job-definition|scheduling-policy|job)/(?P<rest>.+)$"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Arns:
    """Builds ARNs for one region and account."""

    region: str
    account: str

    def _prefix(self) -> str:
        return f"arn:aws:batch:{self.region}:{self.account}"

    def compute_environment(self, name: str) -> str:
        return f"{self._prefix()}:compute-environment/{name}"

    def job_queue(self, name: str) -> str:
        return f"{self._prefix()}:job-queue/{name}"

    def job_definition(self, name: str, revision: int) -> str:
        return f"{self._prefix()}:job-definition/{name}:{revision}"

    def scheduling_policy(self, name: str) -> str:
        return f"{self._prefix()}:scheduling-policy/{name}"

    def job(self, job_id: str) -> str:
        return f"{self._prefix()}:job/{job_id}"

    def ecs_cluster(self, ce_name: str, ce_uuid: str) -> str:
        return (
            f"arn:aws:ecs:{self.region}:{self.account}:cluster/"
            f"{ce_name}_Batch_{ce_uuid.replace('-', '')[:32]}"
        )


@dataclass(frozen=True, slots=True)
class ParsedArn:
    kind: str
    rest: str


def parse_arn(value: str) -> ParsedArn | None:
    """Split a Batch ARN into its resource kind and the part after the slash."""
    m = _ARN_RE.match(value)
    if m is None:
        return None
    return ParsedArn(m.group("kind"), m.group("rest"))


def name_from_ref(ref: str, kind: str) -> str:
    """A name-or-ARN reference to a name; an ARN of another kind is invalid."""
    if ref.startswith("arn:"):
        parsed = parse_arn(ref)
        if parsed is None or parsed.kind != kind:
            raise InvalidRequest(f"{ref} is not a valid {kind} ARN.")
        return parsed.rest
    return ref


def new_job_id() -> str:
    return str(uuid.uuid4())


def new_task_id() -> str:
    """ECS task ids are 32 hex characters; they appear in log stream names."""
    return uuid.uuid4().hex
