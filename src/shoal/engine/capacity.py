"""Resource arithmetic for placement: what a compute environment can hold."""

from __future__ import annotations

from dataclasses import dataclass

from shoal.domain.container import Resources
from shoal.domain.records import ComputeEnvironment


@dataclass(slots=True)
class Usage:
    vcpus: float = 0.0
    memory_mib: int = 0
    gpus: int = 0

    def add(self, r: Resources, sign: int = 1) -> None:
        self.vcpus += sign * (r.vcpus or 0.0)
        self.memory_mib += sign * (r.memory_mib or 0)
        self.gpus += sign * r.gpus


@dataclass(frozen=True, slots=True)
class Limits:
    vcpus: float
    memory_mib: int | None  # None: not limited
    gpus: int | None

    def holds(self, used: Usage, need: Resources) -> bool:
        if used.vcpus + (need.vcpus or 0.0) > self.vcpus + 1e-9:
            return False
        if (
            self.memory_mib is not None
            and used.memory_mib + (need.memory_mib or 0) > self.memory_mib
        ):
            return False
        return self.gpus is None or used.gpus + need.gpus <= self.gpus

    def ever_holds(self, need: Resources) -> bool:
        return self.holds(Usage(), need)


@dataclass(frozen=True, slots=True)
class Capacity:
    """What a cluster (Ray) holds: in total, and on its biggest node (the
    most one job can get); and what the engine may have placed on it at once
    (`admit`: more than the total when the cluster queues work itself, so
    that a freed slot is taken at once, without a round trip to the engine)."""

    total: Limits
    biggest: Limits
    admit: Limits
    # What may be placed at once while the compute environment's attempts
    # run short (see the engine's `follow_below_ms`): a deeper queue, as a
    # slot then frees many times during one round trip to the engine.
    admit_short: Limits | None = None


def ce_limits(ce: ComputeEnvironment, host: Limits | None) -> Limits:
    """A compute environment's ceiling: maxvCpus for MANAGED, unmanagedvCpus (or
    the host) for UNMANAGED, and never more than the host an executor runs on."""
    if ce.compute_resources is not None:
        vcpus = float(ce.compute_resources.get("maxvCpus", 0))
    elif ce.unmanaged_vcpus:
        vcpus = float(ce.unmanaged_vcpus)
    else:
        vcpus = host.vcpus if host is not None else float("inf")
    if host is None:
        return Limits(vcpus=vcpus, memory_mib=None, gpus=None)
    return Limits(vcpus=min(vcpus, host.vcpus), memory_mib=host.memory_mib, gpus=host.gpus)


def describe_need(need: Resources) -> str:
    parts = [f"{need.vcpus:g} vCPU", f"{need.memory_mib} MiB memory"]
    if need.gpus:
        parts.append(f"{need.gpus} GPU")
    return ", ".join(parts)


def describe_free(limits: Limits, used: Usage) -> str:
    parts = [f"{limits.vcpus - used.vcpus:g} of {limits.vcpus:g} vCPU free"]
    if limits.memory_mib is not None:
        parts.append(f"{limits.memory_mib - used.memory_mib} of {limits.memory_mib} MiB free")
    if limits.gpus:
        parts.append(f"{limits.gpus - used.gpus} of {limits.gpus} GPU free")
    return ", ".join(parts)
