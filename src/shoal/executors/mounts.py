"""Host paths a job may mount into its container (docker, and docker on Ray).

A job definition's `mountPoints` name `volumes` with a host `sourcePath`. A
container that can mount any host path can read or write anything on the
host, so only paths under the roots the server allows (`--volume-root`) are
mounted; anything else fails the attempt to start, as AWS fails a task whose
mount it cannot make.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal.executors.base import LaunchError


@dataclass(frozen=True, slots=True)
class BindMount:
    source: str  # resolved host path
    target: str
    read_only: bool


def bind_mounts(props: dict[str, Any], allowed_roots: list[Path]) -> list[BindMount]:
    """The bind mounts of the container properties `props`; LaunchError when
    one names no host path or a path outside `allowed_roots` (resolved)."""
    volumes = {v.get("name"): v for v in props.get("volumes") or []}
    mounts: list[BindMount] = []
    for point in props.get("mountPoints") or []:
        volume = volumes.get(point.get("sourceVolume"))
        source = ((volume or {}).get("host") or {}).get("sourcePath")
        if volume is None or not source:
            raise LaunchError(
                f"CannotStartContainerError: mount point {point.get('containerPath')} needs "
                "a volume with a host sourcePath"
            )
        path = Path(source).resolve()
        if not any(path == root or root in path.parents for root in allowed_roots):
            raise LaunchError(
                f"CannotStartContainerError: host path {source} is outside the roots this "
                "server allows for volumes"
            )
        mounts.append(BindMount(str(path), point["containerPath"], bool(point.get("readOnly"))))
    return mounts
