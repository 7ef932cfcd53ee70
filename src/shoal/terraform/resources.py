"""What the resources shoal runs have in common.

Each Terraform resource type shoal runs is a `Kind`: it turns the evaluated
arguments into the API request (`desired`), finds the resource on the server
by name (`read`), lists what differs (`changes`), and creates, updates or
deletes it. `Api` holds the boto3 clients and the polling that waits for
compute environments and queues to settle. The helpers below convert
Terraform's snake_case arguments, with their loose typing (numbers written
as strings), into the typed members botocore wants.
"""

from __future__ import annotations

import hashlib
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from shoal.cli.client import client
from shoal.terraform.errors import ApplyError, EvalError
from shoal.terraform.expressions import to_bool, to_number, to_str
from shoal.terraform.stubs import Environment


class ResourceError(ApplyError):
    """A problem with one resource; the plan adds its file, line and address."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Desired:
    """What the files say one resource should be."""

    name: str  # the AWS name, which identifies it
    request: dict[str, Any]  # the create request, members as botocore wants them
    tags: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # kind-specific settings


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """One difference between the files and the server."""

    member: str  # API member, e.g. computeResources.maxvCpus
    argument: str  # Terraform argument, e.g. compute_resources.max_vcpus
    old: Any
    new: Any
    in_place: bool = True  # False: the server cannot change it (destroy and apply again)

    def __str__(self) -> str:
        def show(v: Any) -> str:
            return "(none)" if v is None else json.dumps(v) if not isinstance(v, str) else v

        scalar = all(
            v is None or isinstance(v, str | int | float | bool) for v in (self.old, self.new)
        )
        if scalar:
            return f"{self.member}: {show(self.old)} -> {show(self.new)}"
        return self.member


class Api:
    """boto3 clients for one shoal server, and the identity its ARNs carry."""

    def __init__(self, endpoint_url: str | None, env: Environment, timeout: float) -> None:
        self.endpoint_url = endpoint_url
        self.env = env
        self.timeout = timeout
        self.region = env.region
        self.account = env.account
        self._clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = client(service, self.endpoint_url)
        return self._clients[service]

    @property
    def batch(self) -> Any:
        return self.client("batch")

    @property
    def events(self) -> Any:
        return self.client("events")

    def learn(self, arn: str | None) -> None:
        """Take the region and account from an ARN the server made, so the
        ARNs predicted for resources not yet created match the server's."""
        parts = (arn or "").split(":")
        if len(parts) >= 6 and parts[0] == "arn" and parts[3] and parts[4]:
            self.region, self.account = parts[3], parts[4]

    def arn(self, service: str, resource: str) -> str:
        return f"arn:aws:{service}:{self.region}:{self.account}:{resource}"

    def wait(self, what: str, probe: Callable[[], tuple[bool, str]]) -> None:
        """Poll `probe` (-> done, state) until done, for at most `timeout` seconds."""
        deadline = time.monotonic() + self.timeout
        delay = 0.05
        while True:
            done, state = probe()
            if done:
                return
            if time.monotonic() > deadline:
                raise ResourceError(
                    f"gave up after {self.timeout:g}s waiting for {what} (it is {state})"
                )
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Setting:
    """What `Kind.desired` needs besides the arguments."""

    address: str
    default_tags: dict[str, str]
    api: Api


class Kind(ABC):
    """One Terraform resource type shoal runs."""

    type: ClassVar[str]
    rank: ClassVar[int]  # apply order among kinds (lower first); destroy reverses it
    arguments: ClassVar[frozenset[str]]  # the arguments understood (others are warned about)

    @abstractmethod
    def desired(self, args: dict[str, Any], setting: Setting) -> Desired:
        """The request the arguments describe; ResourceError for a bad argument."""

    @abstractmethod
    def read(self, api: Api, want: Desired) -> Any | None:
        """The resource as the server describes it, or None when there is none."""

    @abstractmethod
    def changes(self, want: Desired, have: Any) -> list[Change]:
        """What differs between `want` and `have` (empty: nothing to do)."""

    @abstractmethod
    def create(self, api: Api, want: Desired) -> dict[str, Any]:
        """Create it (waiting until usable); its attributes."""

    @abstractmethod
    def update(self, api: Api, want: Desired, have: Any, changes: list[Change]) -> dict[str, Any]:
        """Apply in-place `changes`; its attributes."""

    @abstractmethod
    def attributes(self, api: Api, want: Desired, have: Any | None) -> dict[str, Any]:
        """Its attributes for references (predicted when `have` is None)."""

    def planned_attributes(
        self, api: Api, want: Desired, have: Any | None, changes: list[Change]
    ) -> dict[str, Any]:
        """Its attributes once `changes` are made (for the plan's references)."""
        return self.attributes(api, want, have)

    @abstractmethod
    def delete(self, api: Api, want: Desired, have: Any) -> None:
        """Delete it, waiting until it is gone. Idempotent."""


# -- argument conversions -----------------------------------------------------


def _convert(fn: Callable[[Any], Any], value: Any, argument: str) -> Any:
    try:
        return fn(value)
    except EvalError as e:
        raise ResourceError(f"{argument}: {e.message}") from None


def as_int(value: Any, argument: str) -> int | None:
    if value is None:
        return None
    number = _convert(to_number, value, argument)
    if not isinstance(number, int):
        raise ResourceError(f"{argument}: {value!r} is not a whole number")
    return number


def as_float(value: Any, argument: str) -> float | None:
    return None if value is None else float(_convert(to_number, value, argument))


def as_bool(value: Any, argument: str) -> bool | None:
    return None if value is None else bool(_convert(to_bool, value, argument))


def as_str(value: Any, argument: str) -> str | None:
    return None if value is None else str(_convert(to_str, value, argument))


def as_str_list(value: Any, argument: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        raise ResourceError(f"{argument}: expected a list, got {value!r}")
    return [str(_convert(to_str, v, argument)) for v in value]


def as_str_map(value: Any, argument: str) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ResourceError(f"{argument}: expected a map, got {value!r}")
    return {str(k): str(_convert(to_str, value[k], f"{argument}.{k}")) for k in value}


def as_json(value: Any, argument: str) -> Any:
    """A JSON document argument (what jsonencode produced), decoded."""
    if value is None or isinstance(value, dict | list):
        return value
    try:
        return json.loads(str(value))
    except json.JSONDecodeError as e:
        raise ResourceError(f"{argument}: not valid JSON: {e}") from None


def blocks(args: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    value = args.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ResourceError(f"{name}: expected {name} {{ ... }} blocks")
    return list(value)


def one_block(args: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    found = blocks(args, name)
    if len(found) > 1:
        raise ResourceError(f"{name}: at most one {name} block is allowed")
    return found[0] if found else None


def compact(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` without its None members (what was not written is not sent)."""
    return {k: v for k, v in doc.items() if v is not None}


def normal(value: Any) -> Any:
    """For comparing: empty members dropped, as AWS fills in defaults such as
    `"environment": []` that mean the same as leaving the member out."""
    if isinstance(value, Mapping):
        out = {k: normal(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, [], {})}
    if isinstance(value, list | tuple):
        return [normal(v) for v in value]
    return value


def required(value: Any, argument: str) -> Any:
    if value is None:
        raise ResourceError(f"the argument {argument} is required")
    return value


def name_of(args: Mapping[str, Any], setting: Setting, *keys: str) -> str:
    """The AWS name: the first of `keys` given, or `<key>_prefix` plus a
    suffix derived from the address (stable, so re-applies find it)."""
    for key in keys:
        if args.get(key) is not None:
            return str(as_str(args[key], key))
    for key in keys:
        prefix = args.get(f"{key}_prefix")
        if prefix is not None:
            suffix = hashlib.sha256(setting.address.encode()).hexdigest()[:12]
            return f"{as_str(prefix, f'{key}_prefix')}{suffix}"
    raise ResourceError(f"the argument {keys[0]} is required")


def tags_of(args: Mapping[str, Any], setting: Setting) -> dict[str, str]:
    return {**setting.default_tags, **(as_str_map(args.get("tags"), "tags") or {})}


def tag_changes(want: dict[str, str], have: Mapping[str, str] | None) -> list[Change]:
    current = dict(have or {})
    if want == current:
        return []
    return [Change(member="tags", argument="tags", old=current, new=want)]


def sync_tags(api: Api, arn: str, want: dict[str, str], have: Mapping[str, str] | None) -> None:
    """TagResource / UntagResource on a Batch resource so its tags are `want`."""
    current = dict(have or {})
    stale = [k for k in current if k not in want]
    if stale:
        api.batch.untag_resource(resourceArn=arn, tagKeys=stale)
    fresh = {k: v for k, v in want.items() if current.get(k) != v}
    if fresh:
        api.batch.tag_resource(resourceArn=arn, tags=fresh)


# -- Batch's names and asynchronous statuses ----------------------------------

_SETTLING = ("CREATING", "UPDATING")


def upper(value: str | None) -> str | None:
    return None if value is None else value.upper()


def name_of_ref(ref: str) -> str:
    """A Batch resource's name from its name or ARN (`...:job-queue/NAME`)."""
    return ref.rsplit("/", 1)[-1] if ref.startswith("arn:") else ref


def wait_settled(api: Api, what: str, describe: Callable[[], Mapping[str, Any] | None]) -> None:
    """Wait until the resource `describe` returns is no longer CREATING/UPDATING."""

    def probe() -> tuple[bool, str]:
        found = describe()
        status = "gone" if found is None else str(found.get("status"))
        return status not in _SETTLING, status

    api.wait(what, probe)


def wait_gone(api: Api, what: str, describe: Callable[[], Mapping[str, Any] | None]) -> None:
    """Wait until `describe` finds nothing (or DELETED)."""

    def probe() -> tuple[bool, str]:
        found = describe()
        status = "gone" if found is None else str(found.get("status"))
        return status in ("gone", "DELETED"), status

    api.wait(what, probe)
