"""A job's effective container: the definition's properties, the submit-time
overrides merged the way AWS merges them, and the command substituted."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shoal.domain.errors import InvalidRequest
from shoal.domain.params import substitute

Json = dict[str, Any]


def merge_overrides(props: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> Json:
    """Apply containerOverrides to containerProperties.

    - `command` replaces the whole command;
    - `environment` merges by name (the override wins, new names are added);
    - `resourceRequirements` replace per type;
    - legacy `vcpus`/`memory` override only the legacy fields: they do not
      override a VCPU/MEMORY given as a resource requirement in the
      definition (AWS's documented trap), so such an override is ignored.
    """
    # A shallow copy: members that change get new lists below; the rest is
    # shared with `props`, which callers do not mutate.
    container: Json = dict(props)
    if not overrides:
        return container
    if "command" in overrides:
        command = list(overrides["command"])
        if any(part == "" for part in command):
            raise InvalidRequest("containerOverrides.command must not contain empty strings.")
        container["command"] = command
    if "environment" in overrides:
        merged = {e.get("name"): e for e in container.get("environment") or []}
        for entry in overrides["environment"]:
            merged[entry.get("name")] = dict(entry)
        container["environment"] = list(merged.values())
    requirements = {r["type"]: r for r in container.get("resourceRequirements") or []}
    for legacy, kind in (("vcpus", "VCPU"), ("memory", "MEMORY")):
        if legacy in overrides and kind not in requirements:
            container[legacy] = overrides[legacy]
    if "resourceRequirements" in overrides:
        for entry in overrides["resourceRequirements"]:
            requirements[entry["type"]] = dict(entry)
        container["resourceRequirements"] = list(requirements.values())
    if "instanceType" in overrides:
        container["instanceType"] = overrides["instanceType"]
    return container


def effective_container(
    props: Mapping[str, Any],
    overrides: Mapping[str, Any] | None,
    parameters: Mapping[str, str],
) -> Json:
    container = merge_overrides(props, overrides)
    if "command" in container:
        container["command"] = substitute(container["command"], parameters)
    return container


@dataclass(frozen=True, slots=True)
class Resources:
    """What one container asks for: vCPUs, MiB of memory, whole GPUs."""

    vcpus: float | None
    memory_mib: int | None
    gpus: int = 0


def resources_of(container: Mapping[str, Any]) -> Resources:
    """Resource requirements win over the legacy `vcpus`/`memory` fields."""
    requirements = {r["type"]: r["value"] for r in container.get("resourceRequirements") or []}
    vcpus: float | None = None
    memory: int | None = None
    if "VCPU" in requirements:
        vcpus = float(requirements["VCPU"])
    elif container.get("vcpus") is not None:
        vcpus = float(container["vcpus"])
    if "MEMORY" in requirements:
        memory = int(requirements["MEMORY"])
    elif container.get("memory") is not None:
        memory = int(container["memory"])
    gpus = int(requirements.get("GPU", 0))
    return Resources(vcpus=vcpus, memory_mib=memory, gpus=gpus)
