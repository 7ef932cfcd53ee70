"""Pure rules: control-plane status settling by the clock, Ref:: substitution,
override merging. No server: the clock is passed in."""

from __future__ import annotations

import pytest

from shoal.domain.clock import ManualClock
from shoal.domain.container import effective_container, resources_of
from shoal.domain.errors import InvalidRequest
from shoal.domain.params import substitute
from shoal.domain.records import Lifecycle, ResourceStatus


@pytest.mark.parametrize(
    ("status", "settled"),
    [
        (ResourceStatus.CREATING, ResourceStatus.VALID),
        (ResourceStatus.UPDATING, ResourceStatus.VALID),
        (ResourceStatus.DELETING, ResourceStatus.DELETED),
        (ResourceStatus.INVALID, ResourceStatus.INVALID),
    ],
)
def test_status_holds_until_it_settles(status: ResourceStatus, settled: ResourceStatus) -> None:
    clock = ManualClock()
    lifecycle = Lifecycle(status=status, settles_at=clock.now_ms() + 500)
    assert lifecycle.effective(clock.now_ms()) is status
    clock.advance(499)
    assert lifecycle.effective(clock.now_ms()) is status
    clock.advance(1)
    assert lifecycle.effective(clock.now_ms()) is settled
    assert lifecycle.gone(clock.now_ms()) is (settled is ResourceStatus.DELETED)


def test_substitution_whole_and_embedded() -> None:
    assert substitute(["run", "Ref::day", "--in=Ref::file.csv"], {"day": "1", "file": "a"}) == [
        "run",
        "1",
        "--in=a.csv",
    ]
    with pytest.raises(InvalidRequest, match="No parameter found for reference missing"):
        substitute(["Ref::missing"], {})


def test_overrides_merge_as_aws_does() -> None:
    props = {
        "command": ["echo", "Ref::x"],
        "environment": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
        "resourceRequirements": [
            {"type": "VCPU", "value": "2"},
            {"type": "MEMORY", "value": "512"},
        ],
    }
    overrides = {
        "environment": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}],
        "resourceRequirements": [{"type": "MEMORY", "value": "1024"}],
        "vcpus": 8,  # legacy: cannot override a VCPU resource requirement
    }
    container = effective_container(props, overrides, {"x": "hi"})
    assert container["command"] == ["echo", "hi"]
    assert {e["name"]: e["value"] for e in container["environment"]} == {
        "A": "1",
        "B": "20",
        "C": "3",
    }
    needs = resources_of(container)
    assert (needs.vcpus, needs.memory_mib) == (2.0, 1024)
    assert props["command"] == ["echo", "Ref::x"]  # the definition is not touched
