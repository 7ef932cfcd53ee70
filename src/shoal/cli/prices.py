"""The price table `shoal cost` uses, in one place.

The figures come from the user's request (seed `aws-batch-processing.md`,
"Cost Breakdown"); where it gives none, the docstring of `Prices` says where
the estimate comes from. `--prices FILE` overrides any of them.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

# The pricing models, as compute environment types name them (UNMANAGED and
# compute environments that are gone are priced as EC2).
MODELS = ("EC2", "SPOT", "FARGATE", "FARGATE_SPOT")


@dataclass(frozen=True, slots=True)
class Rate:
    """Dollars per hour of one vCPU, one GiB of memory, one GPU."""

    vcpu: float
    memory_gib: float
    gpu: float

    def dollars(self, vcpu_seconds: float, memory_gib_seconds: float, gpu_seconds: float) -> float:
        return (
            vcpu_seconds * self.vcpu + memory_gib_seconds * self.memory_gib + gpu_seconds * self.gpu
        ) / 3600


@dataclass(frozen=True, slots=True, kw_only=True)
class Prices:
    """Dollars per hour, per pricing model.

    From the seed's cost breakdown (`seed/aws-batch-processing.md`, "Cost
    Breakdown"):
    - EC2 on-demand: $0.085/hr for an m5.large (2 vCPU, 8 GiB), i.e. $0.0425
      per vCPU-hour; memory comes with the instance (0 per GiB-hour);
    - EC2 Spot: ~$0.025/hr for the same instance ("70% off"), i.e. $0.0125 per
      vCPU-hour;
    - Fargate: $0.04048 per vCPU-hour and $0.004445 per GB-hour (a GB of task
      memory is 1024 MiB, as Fargate sizes tasks).

    Estimates the seed does not give:
    - Fargate Spot: AWS advertises it at up to 70% off Fargate; 30% of the
      Fargate prices, rounded: $0.01214 per vCPU-hour, $0.00133 per GB-hour;
    - GPUs: $0.526 per GPU-hour, the on-demand price of a g4dn.xlarge (one
      T4) in us-east-1; Spot 70% off ($0.1578). Fargate has no GPUs: its
      columns price GPU-hours at the EC2 rates (on-demand for Fargate, Spot
      for Fargate Spot) so that GPU work is not counted as free.
    """

    ec2_vcpu_hour: float = 0.085 / 2
    ec2_memory_gib_hour: float = 0.0
    ec2_gpu_hour: float = 0.526
    spot_vcpu_hour: float = 0.025 / 2
    spot_memory_gib_hour: float = 0.0
    spot_gpu_hour: float = 0.526 * 0.3
    fargate_vcpu_hour: float = 0.04048
    fargate_memory_gib_hour: float = 0.004445
    fargate_gpu_hour: float = 0.526
    fargate_spot_vcpu_hour: float = 0.01214
    fargate_spot_memory_gib_hour: float = 0.00133
    fargate_spot_gpu_hour: float = 0.526 * 0.3

    def rate(self, model: str) -> Rate:
        """The rates of a pricing model (one of MODELS)."""
        prefix = model.lower()
        return Rate(
            vcpu=getattr(self, f"{prefix}_vcpu_hour"),
            memory_gib=getattr(self, f"{prefix}_memory_gib_hour"),
            gpu=getattr(self, f"{prefix}_gpu_hour"),
        )

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def load(path: Path | None) -> Prices:
    """The default table, with what the JSON object in `path` overrides.
    Raises ValueError with a message fit for the user."""
    if path is None:
        return Prices()
    try:
        given = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read prices from {path}: {e}") from None
    if not isinstance(given, dict):
        raise ValueError(f"{path} must hold a JSON object of prices")
    known = {f.name for f in dataclasses.fields(Prices)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise ValueError(
            f"unknown price {', '.join(unknown)} in {path}; known: {', '.join(sorted(known))}"
        )
    for key, value in given.items():
        # bool is an int to Python, never a price.
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"price {key} in {path} must be a number >= 0, not {value!r}")
    return dataclasses.replace(Prices(), **{k: float(v) for k, v in given.items()})
