"""Plan, apply and destroy: the files compared with the server, then changed.

`apply` first surveys every resource shoal runs, in dependency order,
without changing anything: it evaluates the arguments (the references to
resources not created yet use the ARNs they will get), describes the
resource on the server and lists the differences. Only when every resource
evaluates and every difference can be made does a second pass make the
calls, now with the real ARNs of what it has just created. So a mistake in
the files (an unknown reference, an invalid value, a change the API cannot
make in place) leaves the server as it was. `destroy` deletes in the
reverse order. Resources are identified by their AWS names: no state file.
"""

from __future__ import annotations

import heapq
import os
import re
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from shoal.terraform import (
    compute_environments,
    events,
    hcl,
    job_definitions,
    job_queues,
    schedules,
    scheduling_policies,
)
from shoal.terraform.errors import ApplyError
from shoal.terraform.hcl import Block, Configuration
from shoal.terraform.resources import Api, Change, Desired, Kind, ResourceError, Setting
from shoal.terraform.scope import META_ARGUMENTS, Evaluation
from shoal.terraform.stubs import Environment
from shoal.terraform.variables import resolve_variables

KINDS: dict[str, Kind] = {
    kind.type: kind()
    for kind in (
        compute_environments.ComputeEnvironment,
        scheduling_policies.SchedulingPolicy,
        job_queues.JobQueue,
        job_definitions.JobDefinition,
        events.EventRule,
        events.EventTarget,
        schedules.SchedulerSchedule,
    )
}

Echo = Callable[[str], None]
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    path: Path
    variables: dict[str, str] = field(default_factory=dict)
    repository_urls: dict[str, str] = field(default_factory=dict)
    endpoint_url: str | None = None
    plan_only: bool = False
    timeout: float = 600.0  # per wait for a compute environment or queue to settle


@dataclass(slots=True)
class Step:
    """One resource: what the files want, what the server has, what differs."""

    block: Block
    kind: Kind
    want: Desired
    have: Any | None
    changes: list[Change]


class Session:
    """One run of apply or destroy over one configuration."""

    def __init__(self, options: Options, out: Echo, warn: Echo) -> None:
        self.options = options
        self.out = out
        self.warn = warn
        self.config: Configuration = hcl.load(options.path)
        self.variables = resolve_variables(self.config, options.variables, os.environ)
        first = Evaluation(self.config, self.variables, Environment(), frozenset(KINDS))
        first.check_references()
        provider = next(
            (
                b
                for b in self.config.of_kind("provider")
                if b.labels[0] == "aws" and "alias" not in b.body
            ),
            None,
        )
        region = first.argument(provider, "region") if provider is not None else None
        region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        self.default_tags: dict[str, str] = {}
        if provider is not None:
            for spec in first.argument(provider, "default_tags") or []:
                self.default_tags.update(
                    {str(k): str(v) for k, v in (spec.get("tags") or {}).items()}
                )
        self.env = Environment(
            region=str(region or "us-east-1"), repository_urls=options.repository_urls
        )
        self.api = Api(options.endpoint_url, self.env, options.timeout)
        self.blocks = [b for b in self.config.of_kind("resource") if b.labels[0] in KINDS]
        for block in self.blocks:
            for meta in ("count", "for_each"):
                if meta in block.body:
                    line = self.config.line_of_argument(block, meta)
                    raise block.where.at(line).error(f"{meta} is not supported by shoal apply")
            for key in block.body:
                if key not in KINDS[block.labels[0]].arguments and key not in META_ARGUMENTS:
                    line = self.config.line_of_argument(block, key)
                    self.warn(f"{block.where.at(line)}: {key} is not used by shoal; ignored")
        self.order = self._order(first)

    # -- order
    def _order(self, ev: Evaluation) -> list[Block]:
        """The resources in dependency order (through locals, stand-ins and
        modules too), kinds in their usual order where references leave a choice."""
        position = {b.address: i for i, b in enumerate(self.blocks)}
        by_address = {b.address: b for b in self.config.blocks}
        direct: dict[str, set[str]] = {}

        def deps(address: str) -> set[str]:
            if address not in direct:
                block = by_address.get(address)
                direct[address] = ev.dependencies(block) if block is not None else set()
            return direct[address]

        needs: dict[str, set[str]] = {}
        for block in self.blocks:
            found: set[str] = set()
            seen = {block.address}
            pending = list(deps(block.address))
            while pending:
                address = pending.pop()
                if address in seen:
                    continue
                seen.add(address)
                if address in position:
                    found.add(address)
                else:
                    pending.extend(deps(address))
            needs[block.address] = found

        def key(address: str) -> tuple[int, int, str]:
            return KINDS[by_address[address].labels[0]].rank, position[address], address

        waiting = {address: set(n) for address, n in needs.items()}
        ready = [key(a) for a, n in waiting.items() if not n]
        heapq.heapify(ready)
        done: list[Block] = []
        while ready:
            address = heapq.heappop(ready)[2]
            done.append(by_address[address])
            for other, n in waiting.items():
                if address in n:
                    n.discard(address)
                    if not n:
                        heapq.heappush(ready, key(other))
        if len(done) != len(self.blocks):
            stuck = sorted(a for a, n in waiting.items() if n)
            raise ApplyError(f"dependency cycle among {', '.join(stuck)}")
        return done

    # -- one resource
    def _guarded(self, block: Block, call: Callable[..., _T], *args: Any) -> _T:
        """`call(*args)`, with its errors told as the resource's (file:line: address: ...)."""
        try:
            return call(*args)
        except ResourceError as e:
            raise block.where.error(e.message) from None
        except ClientError as e:
            error = e.response.get("Error", {})
            raise block.where.error(
                f"{e.operation_name}: {error.get('Code', 'Error')}: {error.get('Message', '')}"
            ) from None
        except EndpointConnectionError:
            raise ApplyError(
                f"cannot reach a shoal server at {self.api.endpoint_url or 'the default endpoint'}"
                " (start one with `shoal server`, or give --endpoint-url)"
            ) from None
        except BotoCoreError as e:
            raise block.where.error(str(e)) from None

    def _desired(self, ev: Evaluation, block: Block) -> Desired:
        kind = KINDS[block.labels[0]]
        args = ev.body(block)
        setting = Setting(address=block.address, default_tags=self.default_tags, api=self.api)
        want: Desired = self._guarded(block, kind.desired, args, setting)
        return want

    def _evaluation(self) -> Evaluation:
        ev = Evaluation(self.config, self.variables, self.env, frozenset(KINDS))
        predicted: dict[str, Mapping[str, Any]] = {}

        def predict(block: Block) -> Mapping[str, Any]:
            # Attributes of a resource not reached yet (only a reference
            # through a stand-in can ask before the order gets there).
            if block.address not in predicted:
                kind = KINDS[block.labels[0]]
                want = self._desired(ev, block)
                predicted[block.address] = self._guarded(
                    block, kind.attributes, self.api, want, None
                )
            return predicted[block.address]

        ev.predict = predict
        return ev

    def _ignored(self, block: Block) -> list[str]:
        """lifecycle { ignore_changes = [...] } as argument paths ("all" for all)."""
        paths: list[str] = []
        for spec in block.body.get("lifecycle") or []:
            raw = spec.get("ignore_changes")
            items = raw if isinstance(raw, list) else [raw] if raw is not None else []
            for item in items:
                text = str(item).removeprefix("${").removesuffix("}").strip()
                paths.append(hcl_path(text))
        return paths

    def survey(self, check: bool) -> list[Step]:
        """Every resource with its differences, changing nothing. With `check`,
        a difference the API cannot make in place is an error."""
        ev = self._evaluation()
        steps: list[Step] = []
        for block in self.order:
            kind = KINDS[block.labels[0]]
            want = self._desired(ev, block)
            have = self._guarded(block, kind.read, self.api, want)
            changes = self._changes(block, kind, want, have)
            if check:
                blocked = [c for c in changes if not c.in_place]
                if blocked:
                    what = "; ".join(str(c) for c in blocked)
                    raise block.where.error(
                        f"cannot change {what} in place: run `shoal destroy` and apply again"
                    )
            ev.managed[block.address] = self._guarded(
                block, kind.planned_attributes, self.api, want, have, changes
            )
            for note in want.extra.get("notes", []):
                self.warn(f"{block.where}: {note}")
            steps.append(Step(block, kind, want, have, changes))
        return steps

    def _changes(self, block: Block, kind: Kind, want: Desired, have: Any) -> list[Change]:
        if have is None:
            return []
        found: list[Change] = self._guarded(block, kind.changes, want, have)
        ignored = self._ignored(block)
        if "all" in ignored:
            return []
        return [
            c
            for c in found
            if not any(c.argument == p or c.argument.startswith(p + ".") for p in ignored)
        ]

    # -- output
    def _line(self, sign: str, verb: str, step: Step, detail: str = "") -> None:
        width = max((len(b.address) for b in self.order), default=0)
        text = f"{sign} {verb:<10} {step.block.address:<{width}}  {step.want.name}"
        self.out(f"{text}  ({detail})" if detail else text)

    def _stand_ins(self) -> None:
        others = [
            b.address
            for b in self.config.blocks
            if (b.kind == "resource" and b.labels[0] not in KINDS) or b.kind in ("module", "data")
        ]
        if others:
            text = f"Not run by shoal (stand-ins so references resolve): {', '.join(others)}"
            self.out(textwrap.fill(text, width=100, subsequent_indent="  ", break_on_hyphens=False))

    @staticmethod
    def _detail(step: Step) -> str:
        shown = "; ".join(str(c) for c in step.changes)
        if isinstance(step.kind, job_definitions.JobDefinition) and any(
            c.member != "tags" for c in step.changes
        ):
            return f"new revision: {shown}"
        return shown

    # -- the commands
    def apply(self) -> None:
        steps = self.survey(check=True)
        self._stand_ins()
        if self.options.plan_only:
            counts = {"create": 0, "update": 0, "unchanged": 0}
            for step in steps:
                if step.have is None:
                    self._line("+", "create", step)
                    counts["create"] += 1
                elif step.changes:
                    self._line("~", "update", step, self._detail(step))
                    counts["update"] += 1
                else:
                    self._line("=", "unchanged", step)
                    counts["unchanged"] += 1
            self.out(
                f"Plan: {counts['create']} to create, {counts['update']} to update, "
                f"{counts['unchanged']} unchanged."
            )
            return
        ev = self._evaluation()
        counts = {"created": 0, "updated": 0, "unchanged": 0}
        for block in self.order:
            kind = KINDS[block.labels[0]]
            want = self._desired(ev, block)
            have = self._guarded(block, kind.read, self.api, want)
            step = Step(block, kind, want, have, self._changes(block, kind, want, have))
            if have is None:
                attrs = self._guarded(block, kind.create, self.api, want)
                self._line("+", "created", step)
                counts["created"] += 1
            elif step.changes:
                blocked = [c for c in step.changes if not c.in_place]
                if blocked:
                    what = "; ".join(str(c) for c in blocked)
                    raise block.where.error(
                        f"cannot change {what} in place: run `shoal destroy` and apply again"
                    )
                attrs = self._guarded(block, kind.update, self.api, want, have, step.changes)
                self._line("~", "updated", step, self._detail(step))
                counts["updated"] += 1
            else:
                attrs = self._guarded(block, kind.attributes, self.api, want, have)
                self._line("=", "unchanged", step)
                counts["unchanged"] += 1
            ev.managed[block.address] = attrs
        self.out(
            f"Applied: {counts['created']} created, {counts['updated']} updated, "
            f"{counts['unchanged']} unchanged."
        )
        self._outputs(ev)

    def _outputs(self, ev: Evaluation) -> None:
        outputs = self.config.of_kind("output")
        if not outputs:
            return
        self.out("Outputs:")
        for block in outputs:
            value = ev.argument(block, "value")
            shown = value if isinstance(value, str) else repr(value)
            self.out(f"  {block.labels[0]} = {shown}")

    def destroy(self) -> None:
        steps = self.survey(check=False)
        gone = absent = 0
        for step in reversed(steps):
            if self.options.plan_only:
                have = step.have
            else:
                have = self._guarded(step.block, step.kind.read, self.api, step.want)
            if have is None:
                self._line("=", "absent", step)
                absent += 1
                continue
            if not self.options.plan_only:
                self._guarded(step.block, step.kind.delete, self.api, step.want, have)
            self._line("-", "destroy" if self.options.plan_only else "destroyed", step)
            gone += 1
        if self.options.plan_only:
            self.out(f"Plan: {gone} to destroy, {absent} absent.")
        else:
            self.out(f"Destroyed: {gone} destroyed, {absent} absent.")


def hcl_path(text: str) -> str:
    """`compute_resources[0].desired_vcpus` -> `compute_resources.desired_vcpus`."""
    return re.sub(r"\[[^\]]*\]", "", text).strip(".")


def apply(options: Options, out: Echo, warn: Echo) -> None:
    """`shoal apply`: make the server match the files (or, with plan_only, say how)."""
    Session(options, out, warn).apply()


def destroy(options: Options, out: Echo, warn: Echo) -> None:
    """`shoal destroy`: delete what the files define (idempotent)."""
    Session(options, out, warn).destroy()
