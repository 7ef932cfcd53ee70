"""A fuzz test of the whole API surface: bad input gets a clear error and
changes nothing.

One real `shoal server --no-engine` is seeded with a few resources of every
kind (compute environment, queues, job definitions, a scheduling policy,
jobs, an EventBridge rule with a target, tags), then receives requests over
one keep-alive HTTP connection (raw ones on a connection each):

* `test_batch_model`, `test_json_services`: hypothesis strategies derived
  from botocore's service models (batch, logs, events) for every operation
  shoal serves (and, weighing as one, those it declines), sent as the SDKs
  send them (Batch rest-json `POST /v1/<op>` and `/v1/tags/{arn}`; Logs and
  EventBridge JSON 1.1 on `POST /` by `X-Amz-Target`). Two kinds of value:
  chaotic (random member subsets; edge strings: empty, huge, control
  characters, unicode, path traversal, NaN-like; integers at and beyond
  int32/int64; floats, NaN; wrong types; nulls; unknown and missing members)
  and plausible (a request that works, from TEMPLATES and the names of the
  seeded resources, broken in exactly one spot), so that requests get past
  the model check into the service's rules.
* `test_raw_malformed`: bytes an SDK never sends: invalid JSON, JSON that
  is not an object, deep nesting, bodies over the 1 MiB cap, wrong or
  missing content types, unknown targets, paths and methods,
  percent-encoding garbage, very long paths and headers, non-UTF-8 bytes, a
  Content-Length shorter than the body, chunked bodies, not HTTP at all.
* `test_lying_content_length`: a Content-Length longer than the body: the
  server waits for bytes that never come, the client gives up, and the half
  request must have changed nothing.
* `test_engine_logs`: a second server with the engine on, after a job has
  printed output: the Logs reads fuzzed on a real stream.
* `test_auth`: a third server with access keys: generated requests signed
  by botocore's signer with keys of each role, or spoiled in one way: a
  spoiled one must get a 403, a role must bound what succeeds.
* `test_regressions`: the bugs this fuzzer found, each as one request.

Invariants, on every reply: status < 500; a 4xx is JSON (`application/json`
or `application/x-amz-json-1.1`) with `__type` (or `code`) and a non-empty
`message`, matching `x-amzn-ErrorType` when that is sent (bytes that are not
HTTP may get uvicorn's plain-text 400 instead, or no reply); no traceback
text in any reply; a 2xx of an API operation is a JSON object. The server
must be alive after every request and answer /health at the end, and its
log must hold no traceback.

"No change to the store from any rejected request" is checked at two grains:

1. After every request, `PRAGMA data_version` of a read-only SQLite
   connection to `<data-dir>/shoal.db` (it changes whenever another
   connection commits anything). A 4xx reply, or a 2xx of a read operation,
   must leave it as it was: this pins any write to the exact request, which
   a coarser check could not (random valid requests do change the store).
2. Requests go in batches of BATCH. After a batch with no successful
   mutating call, a checksum of every table's rows (read read-only) must
   equal the one before the batch, and every few such batches the state seen
   through the API (Describe*/List* of everything, jobs per seeded queue and
   status, tags, rules, targets) must equal the last snapshot. After a batch
   that holds a 2xx of a mutating operation, the seeded resources are
   brought back if it deleted or disabled them, and new baselines are taken.

The runs are reproducible (`derandomize=True`, no example database, no
shrinking: the server's state is shared between examples, so a failure
names the request instead). `SHOAL_FUZZ_EXAMPLES` scales the total number of
requests (default 12,000, about a minute here); bench/fuzz_long.py runs
100,000+. `SHOAL_FUZZ_KEEP_GOING=1` reports every failure, one of each kind,
at the end of each phase; `SHOAL_FUZZ_STATS=1` prints where requests ended.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import math
import os
import re
import socket
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from conftest import Server, start_server
from engine_support import ENGINE_ARGS, LOG_GROUP, shutdown, wait_for
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import strategies as st

from shoal.api import batch as batch_api
from shoal.api import events as events_api
from shoal.api import logs as logs_api
from shoal.api.model import service_model

# All of this module's tests share one server: one xdist worker runs them.
pytestmark = pytest.mark.xdist_group("fuzz")

TOTAL = int(os.environ.get("SHOAL_FUZZ_EXAMPLES", "12000"))
SHARES = {"batch": 0.48, "json": 0.22, "raw": 0.20, "auth": 0.05, "engine": 0.05}
BATCH = 25  # requests between two checksum comparisons
API_SNAPSHOT_EVERY = 4  # clean batches between two API snapshot comparisons
TIMEOUT = 10.0
# Record every broken invariant and report them all at the end of a phase,
# instead of stopping at the first (for long runs and for hunting bugs).
KEEP_GOING = os.environ.get("SHOAL_FUZZ_KEEP_GOING") == "1"
FAILURES: list[str] = []
STATS = os.environ.get("SHOAL_FUZZ_STATS") == "1"  # print where the requests end up
MESSAGES: Counter[str] = Counter()
GARBAGE_TIMEOUT = 0.5  # a server still reading a request that never ends is fine

ACCOUNT = "123456789012"
PREFIX = f"arn:aws:batch:us-east-1:{ACCOUNT}"
CE, QUEUE, FS_QUEUE, DEF, POLICY, RULE = "fz-ce", "fz-q", "fz-fsq", "fz-def", "fz-sp", "fz-rule"
CE_ARN = f"{PREFIX}:compute-environment/{CE}"
QUEUE_ARN = f"{PREFIX}:job-queue/{QUEUE}"
FS_QUEUE_ARN = f"{PREFIX}:job-queue/{FS_QUEUE}"
DEF_ARN = f"{PREFIX}:job-definition/{DEF}:1"
POLICY_ARN = f"{PREFIX}:scheduling-policy/{POLICY}"
RULE_ARN = f"arn:aws:events:us-east-1:{ACCOUNT}:rule/{RULE}"
STATUSES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED")

# Stand-ins for values known only once the server runs (job ids, the log
# stream of the engine phase's job); swapped in just before sending.
JOB, JOB_ARN, ARRAY_JOB, STREAM = "@@job@@", "@@jobarn@@", "@@array@@", "@@stream@@"

SERVICES: dict[str, Any] = {name: service_model(name) for name in ("batch", "logs", "events")}
# Every operation shoal serves (and, below, the ones it declines).
TAG_OPS = ("ListTagsForResource", "TagResource", "UntagResource")
BATCH_OPS = sorted(set(batch_api.HANDLERS) - set(TAG_OPS))
LOGS_OPS = sorted(logs_api.HANDLERS)
EVENTS_OPS = sorted(events_api.HANDLERS)


def _unserved(service: str, served: tuple[str, ...] | list[str]) -> list[str]:
    also = set(TAG_OPS) if service == "batch" else set()
    return sorted(set(SERVICES[service].operation_names) - set(served) - also)


def is_read(op: str) -> bool:
    return op.startswith(("Describe", "List", "Get", "Filter"))


# -- values -----------------------------------------------------------------------

# fmt: off
HUGE = "x" * 200_000
INT_EDGES = [
    0, 1, -1, 2, 3, 5, 10, 50, 99, 100, 101, 1000, 1001, 9999, 10_000, 10_001,
    2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**53 + 1, 2**63 - 1, 2**63, -(2**63),
    -(2**63) - 1, 2**64, 10**30, -(10**30),
]
FLOAT_EDGES = [0.0, -0.0, 0.5, 1.0, 1.5, 1e-300, 1e308, -1e308, math.nan, math.inf, -math.inf]
# Digits int() refuses ('²'), digits of other scripts it takes (Arabic-Indic).
SUPERSCRIPT_TWO, ARABIC_123 = "\u00b2", "\u0661\u0662\u0663"
STRING_EDGES = [
    "", " ", "a", "A" * 128, "A" * 129, "x" * 513, "x" * 1025, "x" * (30 * 1024 + 1), HUGE,
    "\x00", "a\x00b", "\t\n\r", "\x1b[31m", "\u202e", "\ufeff", "\uffff", "\U0010ffff",
    "\U0001f600" * 8, "é", "ǅ", "ß", "İ", SUPERSCRIPT_TWO, ARABIC_123, "0", "-1", "1.5", "1e309",
    "NaN", "nan", "Infinity", "-Infinity", "99999999999999999999", "9" * 5000, "null", "true",
    "[]", "{}", "{", "*", "**", "a*", "%", "%00", "%2F", "%zz", "..", ".", "/", "//", "../..",
    "../../etc/passwd", "a/b", "a:b", "a b", "arn:", f"{PREFIX}:job/",
    "arn:aws:batch:::job-queue/x",
    f"{PREFIX}:job-queue/", f"{PREFIX}:job-definition/{DEF}", f"{PREFIX}:job-definition/{DEF}:x",
    f"{PREFIX}:job-definition/{DEF}:99999999999999999999", f"{PREFIX}:compute-environment/{QUEUE}",
    "Ref::x", "Ref::", "${x}", "'; DROP TABLE jobs; --", "\\", '"', "<html>", "a\nb", "\ud800",
    "shoal.db", "VCPU", "MEMORY", "GPU",
]


def _envelope(op: str, key: Any) -> str:
    """A pagination token as shoal makes them, around any cursor."""
    raw = json.dumps({"op": op, "k": key}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


TOKENS = [
    "", "0", "1", "-1", SUPERSCRIPT_TWO, ARABIC_123, "9" * 5000, "f/0", "b/0", "f/7", "b/-1",
    "f/999999999999999999", "f/9999999999999999999", "x/1", "f/1\n", "=", "====", "eyJ9",
    _b64("[1]"), _b64("5"), _b64('{"x": -5}'), _b64('{"x": "y"}'), _b64(f'{{"{STREAM}": -1}}'),
    _b64(f'{{"{STREAM}": 1e3}}'), _b64(f'{{"{STREAM}": null}}'), _b64(f'{{"{STREAM}": {2**70}}}'),
    _b64('{"": 0}'),
    *(
        _envelope(op, key)
        for op in (
            "DescribeComputeEnvironments", "DescribeJobQueues", "DescribeJobDefinitions",
            "ListJobs", "ListSchedulingPolicies", "ListRules", "ListTargetsByRule",
        )
        for key in ("x", "", 0, -1, 2**63, 2**64, 1.5, [DEF, 1], [DEF, -1], [1, 2], {"a": 1}, True)
    ),
]

# Values the seeded server knows (and near misses), so that many requests get
# past the model check into the service's rules.
_CE_REFS = [CE, CE_ARN, "fz-nope", f"{PREFIX}:compute-environment/fz-nope"]
_QUEUE_REFS = [QUEUE, QUEUE_ARN, FS_QUEUE, FS_QUEUE_ARN, "fz-nope", f"{PREFIX}:job-queue/fz-nope"]
_DEF_REFS = [
    DEF, f"{DEF}:1", f"{DEF}:2", f"{DEF}:0", f"{DEF}:-1", f"{DEF}:99", DEF_ARN, "fz-nope",
    f"{DEF}:{'9' * 5000}", f"{DEF}:{SUPERSCRIPT_TWO}",
]
_JOB_REFS = [
    JOB, JOB_ARN, ARRAY_JOB, f"{ARRAY_JOB}:0", f"{ARRAY_JOB}:2", f"{ARRAY_JOB}:3",
    f"{ARRAY_JOB}:-1", f"{ARRAY_JOB}:x", f"{ARRAY_JOB}:{SUPERSCRIPT_TWO}",
    f"{JOB}#{SUPERSCRIPT_TWO}",
    str(uuid.UUID(int=7)),
]
_ANY_ARN = [CE_ARN, QUEUE_ARN, DEF_ARN, POLICY_ARN, JOB_ARN, RULE_ARN, f"{PREFIX}:job/nope"]
_RULES = [RULE, "fz-nope", "fz-new", "a" * 65, "bad name"]
_LOGS_ARN = f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group"
_GROUPS = [
    LOG_GROUP, "/aws/batch", "/", "..", ".", "logs", "%empty", f"{_LOGS_ARN}:{LOG_GROUP}:*",
    f"{_LOGS_ARN}:..:*", "x" * 300,
]
_STREAMS = [STREAM, "shoal.db", "shoal.db-wal", "..", ".", "%empty", f"{DEF}/default/x"]
_SCHEDULES = [
    "rate(1 minute)", "rate(5 minutes)", "rate(1 minutes)", "rate(0 minutes)", "rate(-1 hours)",
    "rate(99999999999999999999 days)", "rate(1 hour)", "rate(² days)", "rate()",
    "cron(0 2 * * ? *)", "cron(0/15 * * * ? *)", "cron(0 18 ? * MON-FRI *)", "cron(* * * * * *)",
    "cron(0 8 L * ? *)", "cron(0 8 ? * 6L *)", "cron(0 8 3W * ? *)", "cron(0 8 ? * 3#2 *)",
    "cron(0 8 ? * 3#9 *)", "cron(0 0 31 2 ? *)", "cron(0 0 ? * 8 *)", "cron(0 0 1 1 ? 2300)",
    "cron(60 0 * * ? *)", "cron(0/0 * * * ? *)", "cron(1-0 * * * ? *)", "cron(0 0 ² * ? *)",
    "cron(a b c d e f)", "cron()", "at(2030-01-01T00:00:00)",
]
_PATTERNS = ['{"source":["aws.batch"]}', "{}", "[]", "1", "not json", "{" * 600, '{"a":' * 600]
DEEP_INPUT = '{"ContainerOverrides": ' + '{"a": ' * 900 + "1" + "}" * 901
_INPUTS = [
    '{"Parameters": {"a": "b"}}', '{"ContainerOverrides": {"Command": ["echo", "x"]}}',
    '{"Parameters": 1, "ContainerOverrides": []}', "[]", "null", "not json", "x" * 8193,
    DEEP_INPUT,
]
# By lower-cased member name, or "shape.member" where the name alone says too little.
KNOWN: dict[str, list[Any]] = {
    "computeenvironmentname": [CE, "fz-new-ce", "fz new"],
    "computeenvironment": _CE_REFS,
    "computeenvironments": _CE_REFS,
    "jobqueuename": [QUEUE, "fz-new-q"],
    "jobqueue": _QUEUE_REFS,
    "jobqueues": _QUEUE_REFS,
    "jobdefinitionname": [DEF, "fz-new-def"],
    "jobdefinition": _DEF_REFS,
    "jobdefinitions": _DEF_REFS,
    "jobname": ["fz-job", "-x", "x" * 128, "x" * 129],
    "jobid": _JOB_REFS,
    "jobs": _JOB_REFS,
    "arrayjobid": _JOB_REFS,
    "multinodejobid": _JOB_REFS,
    "arn": [POLICY_ARN, f"{PREFIX}:scheduling-policy/fz-nope", QUEUE_ARN, "arn:aws:sqs:x"],
    "arns": [POLICY_ARN, f"{PREFIX}:scheduling-policy/fz-nope", CE_ARN],
    "schedulingpolicyarn": [POLICY_ARN, f"{PREFIX}:scheduling-policy/fz-nope"],
    "name": [POLICY, "fz-new-sp", RULE, "AWS_BATCH_X", "PATH"],
    "keyvaluespair.name": [  # ListJobs filters
        "JOB_NAME", "JOB_DEFINITION", "BEFORE_CREATED_AT", "AFTER_CREATED_AT", "SHARE_IDENTIFIER",
        "job_name", "x",
    ],
    "keyvaluespair.values": [
        "1700000000000", "99999999999999999999", "9" * 5000, SUPERSCRIPT_TWO, ARABIC_123, "-1",
        "fz*", "*", f"{DEF}:1", DEF_ARN, f"{DEF_ARN}*", "arn:aws:batch:x*", "A",
    ],
    "resourcearn": _ANY_ARN,
    "shareidentifier": ["A", "B", "a*", "*"],
    "image": ["busybox"],
    "command": ["echo", "Ref::who", "true"],
    "value": ["1", "0.5", "128", "0", "-1", "1e3", "0.0000001", "99999999999"],
    "reason": ["fz", "x" * 1025],
    "nexttoken": TOKENS,
    "tagkeys": ["k", "aws:x", "fz"],
    "onexitcode": ["1", "1*", "*", "x", "1**"],
    "onreason": ["OutOfMemory*", "*", "a b*", "é"],
    "onstatusreason": ["Host EC2*", "*"],
    "action": ["RETRY", "exit", "Exit", "x"],
    "rule": _RULES,
    "nameprefix": ["fz", "", "zzz"],
    "scheduleexpression": _SCHEDULES,
    "eventpattern": _PATTERNS,
    "input": _INPUTS,
    "id": ["t1", "t2", "bad id", "a" * 65],
    "ids": ["t1", "t2", "nope"],
    "eventbusname": ["default", "other", f"arn:aws:events:us-east-1:{ACCOUNT}:event-bus/default"],
    "loggroupname": _GROUPS,
    "loggroupidentifier": _GROUPS,
    "loggroupnameprefix": _GROUPS,
    "loggroupnamepattern": ["batch", "", "."],
    "logstreamname": _STREAMS,
    "logstreamnames": _STREAMS,
    "logstreamnameprefix": [f"{DEF}/", "", ".", "..", "shoal"],
    "filterpattern": ['"line"', "line", '"', '""', "?a ?b", "[x]", "{ $.x = 1 }", "-line"],
}
# EventBridge's members of the same names mean other things.
_EVENTS_KNOWN = {
    "arn": [QUEUE_ARN, "arn:aws:sqs:us-east-1:1:q", f"{PREFIX}:job-queue/fz-nope", "x"],
    "name": _RULES,
    "resourcearn": [RULE_ARN, f"{RULE_ARN}/x", "arn:aws:events:us-east-1:1:rule/"],
    "jobdefinition": _DEF_REFS,
    "jobname": KNOWN["jobname"],
}
# fmt: on


_CONTAINER = {
    "image": "busybox",
    "command": ["echo", "Ref::who"],
    "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "128"}],
}
_TARGET = {"Id": "t2", "Arn": QUEUE_ARN, "BatchParameters": {"JobDefinition": DEF, "JobName": "fz"}}
# Requests (and parts) that work, by model shape name: the plausible
# strategies start from these, add a few optional members and break one spot.
TEMPLATES: dict[str, dict[str, Any]] = {
    "SubmitJobRequest": {"jobName": "fz-j", "jobQueue": QUEUE, "jobDefinition": DEF},
    "RegisterJobDefinitionRequest": {
        "jobDefinitionName": DEF,
        "type": "container",
        "containerProperties": _CONTAINER,
    },
    "ContainerProperties": _CONTAINER,
    "CreateComputeEnvironmentRequest": {
        "computeEnvironmentName": "fz-new-ce",
        "type": "MANAGED",
        "computeResources": {"type": "EC2", "maxvCpus": 4, "minvCpus": 0},
    },
    "ComputeResource": {"type": "EC2", "maxvCpus": 4, "minvCpus": 0},
    "CreateJobQueueRequest": {
        "jobQueueName": "fz-new-q",
        "priority": 1,
        "computeEnvironmentOrder": [{"order": 1, "computeEnvironment": CE}],
    },
    "UpdateJobQueueRequest": {"jobQueue": QUEUE},
    "UpdateComputeEnvironmentRequest": {"computeEnvironment": CE},
    "CreateSchedulingPolicyRequest": {"name": "fz-new-sp"},
    "ListJobsRequest": {"jobQueue": QUEUE},
    "DescribeJobsRequest": {"jobs": [JOB, ARRAY_JOB]},
    "CancelJobRequest": {"jobId": JOB, "reason": "fz"},
    "TerminateJobRequest": {"jobId": JOB, "reason": "fz"},
    "RetryStrategy": {"attempts": 2, "evaluateOnExit": [{"onExitCode": "1*", "action": "RETRY"}]},
    "PutRuleRequest": {"Name": RULE, "ScheduleExpression": "rate(1 day)"},
    "PutTargetsRequest": {"Rule": RULE, "Targets": [_TARGET]},
    "Target": _TARGET,
    "GetLogEventsRequest": {"logGroupName": LOG_GROUP, "logStreamName": STREAM},
    "FilterLogEventsRequest": {"logGroupName": LOG_GROUP},
    "DescribeLogStreamsRequest": {"logGroupName": LOG_GROUP},
}


def anything(depth: int = 2) -> st.SearchStrategy[Any]:
    """Any JSON value, for members sent with the wrong type."""
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.sampled_from(INT_EDGES),
        st.sampled_from(FLOAT_EDGES),
        st.text(max_size=8),
        st.sampled_from(STRING_EDGES),
    )
    if depth <= 0:
        return leaves
    return st.one_of(
        leaves,
        st.lists(anything(depth - 1), max_size=3),
        st.dictionaries(st.text(max_size=6), anything(depth - 1), max_size=3),
    )


ANY = anything()
# Mostly well-typed values; now and then a member of another type.
_WRONG = (False,) * 14 + (True,)


_WRONG_PICK = st.sampled_from(_WRONG)


def _sometimes_wrong(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # (Strategies are built once, never inside a draw: hypothesis validates
    # each new one, and over these deep shapes that costs more than the draw.)
    @st.composite
    def pick(draw: Any) -> Any:
        return draw(ANY) if draw(_WRONG_PICK) else draw(strategy)

    return pick()


MAX_DEPTH = 7
# What a plausible string, number or map key looks like when nothing better is known.
_PLAIN_STRINGS = ["fz-a", "1", "A", "Ref::who", "busybox"]
_PLAIN_INTS = [0, 1, 2, 3, 10, 60, 100, 128, 1000, 10_000]


class ShapeStrategies:
    """Hypothesis strategies for the input shapes of one service's model.

    `valid=False`: chaos everywhere (edge values in every member, wrong types
    now and then, about half the optional members). `valid=True`: values an
    SDK user might well send (known names, enum members, small numbers, a
    few optional members), for `one_mutation` to break in exactly one spot,
    so that requests get past the model check into the service's rules.
    """

    def __init__(self, service: str, *, valid: bool) -> None:
        self.service = service
        self.valid = valid
        self.model = SERVICES[service]
        self._cache: dict[tuple[str, str, int], st.SearchStrategy[Any]] = {}
        self._inputs: dict[str, st.SearchStrategy[Any]] = {}

    def known(self, hint: str) -> list[Any] | None:
        """Values for a member, by "shape.member" or else by "member"."""
        for key in (hint.lower(), hint.lower().rpartition(".")[2]):
            if self.service == "events" and key in _EVENTS_KNOWN:
                return _EVENTS_KNOWN[key]
            if key in KNOWN:
                return KNOWN[key]
        return None

    def for_shape(self, shape: Any, hint: str = "", depth: int = 0) -> st.SearchStrategy[Any]:
        key = (shape.name, hint, min(depth, MAX_DEPTH))
        if key not in self._cache:
            self._cache[key] = st.deferred(lambda: self._build(shape, hint, depth))
        return self._cache[key]

    def _maybe_wrong(self, strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return strategy if self.valid else _sometimes_wrong(strategy)

    def _build(self, shape: Any, hint: str, depth: int) -> st.SearchStrategy[Any]:
        kind = shape.type_name
        if depth >= MAX_DEPTH:
            return st.just({} if kind in ("structure", "map") else [] if kind == "list" else "")
        if kind == "structure":
            return self._structure(shape, depth)
        known = self.known(hint)
        if kind == "list":
            member = self.for_shape(shape.member, hint, depth + 1)
            if self.valid:
                return st.lists(member, min_size=shape.metadata.get("min", 0) and 1, max_size=2)
            big = st.sampled_from([0, 51, 101, 1001]).map(
                lambda n: [known[0] if known else "x"] * n
            )
            return _sometimes_wrong(st.one_of(st.lists(member, max_size=4), big))
        if kind == "map":
            values = self.for_shape(shape.value, hint + "Value", depth + 1)
            if self.valid:
                return st.dictionaries(st.sampled_from(["k", "who", "team"]), values, max_size=2)
            # Keys are strings in JSON whatever the model says.
            keys = st.one_of(st.sampled_from(STRING_EDGES), st.text(max_size=12))
            many = st.sampled_from([50, 51, 500]).map(lambda n: {f"k{i}": "v" for i in range(n)})
            return _sometimes_wrong(st.one_of(st.dictionaries(keys, values, max_size=4), many))
        if kind == "string":
            options: list[st.SearchStrategy[Any]] = []
            if known:
                options += [st.sampled_from(known)] * 2
            if shape.enum:
                options += [st.sampled_from(list(shape.enum))] * 2
                if not self.valid:
                    variants = [e.lower() for e in shape.enum] + [e + " " for e in shape.enum]
                    options.append(st.sampled_from(variants))
            if self.valid:
                return st.one_of(options or [st.sampled_from(_PLAIN_STRINGS)])
            options += [st.sampled_from(STRING_EDGES), st.text(max_size=24)]
            return _sometimes_wrong(st.one_of(options))
        if kind in ("integer", "long"):
            if self.valid:
                return st.one_of(st.sampled_from(_PLAIN_INTS), st.integers(0, 100))
            return _sometimes_wrong(
                st.one_of(st.sampled_from(INT_EDGES), st.integers(-5, 20_000), st.integers())
            )
        if kind in ("float", "double"):
            if self.valid:
                return st.sampled_from([0.5, 1.0, 2.0])
            return _sometimes_wrong(st.one_of(st.sampled_from(FLOAT_EDGES), st.floats()))
        if kind == "boolean":
            return self._maybe_wrong(st.booleans())
        if kind == "timestamp":
            return st.one_of(st.sampled_from(INT_EDGES), st.sampled_from(STRING_EDGES))
        return ANY

    def _structure(self, shape: Any, depth: int) -> st.SearchStrategy[Any]:
        body_members = {
            name: member
            for name, member in shape.members.items()
            if member.serialization.get("location") is None
        }
        required = {
            name: self.for_shape(member, f"{shape.name}.{name}", depth + 1)
            for name, member in body_members.items()
            if name in shape.required_members
        }
        optional = {
            name: self.for_shape(member, f"{shape.name}.{name}", depth + 1)
            for name, member in body_members.items()
            if name not in shape.required_members
        }
        if self.valid:
            return _few_optional(required, optional, TEMPLATES.get(shape.name))
        base = st.fixed_dictionaries(required, optional=optional)
        names = sorted(body_members) or ["x"]

        @st.composite
        def mutated(draw: Any) -> Any:
            value: dict[str, Any] = draw(base)
            how = draw(st.sampled_from(("none",) * 12 + ("drop", "null", "unknown", "wrong")))
            if how == "drop" and required:
                value.pop(draw(st.sampled_from(sorted(required))), None)
            elif how == "null":
                value[draw(st.sampled_from(names))] = None
            elif how == "unknown":
                value[draw(st.text(max_size=10))] = draw(ANY)
            elif how == "wrong":
                return draw(ANY)
            return value

        return mutated()

    def input(self, op: str) -> st.SearchStrategy[Any]:
        if op not in self._inputs:
            shape = self.model.operation_model(op).input_shape
            if shape is None:
                self._inputs[op] = st.just({})
            elif self.valid:
                self._inputs[op] = one_mutation(self.for_shape(shape))
            else:
                self._inputs[op] = self.for_shape(shape)
        return self._inputs[op]


def _few_optional(
    required: dict[str, st.SearchStrategy[Any]],
    optional: dict[str, st.SearchStrategy[Any]],
    template: dict[str, Any] | None = None,
) -> st.SearchStrategy[Any]:
    """The required members and up to three of the optional ones; the
    template's members (a request that works) take the place of drawn ones."""
    template = template or {}
    required = {k: v for k, v in required.items() if k not in template}
    names = sorted(k for k in optional if k not in template)
    few = st.lists(st.sampled_from(names), max_size=3, unique=True) if names else st.just([])

    @st.composite
    def draw_few(draw: Any) -> dict[str, Any]:
        value = json.loads(json.dumps(template))  # a copy for one_mutation to change
        value.update({name: draw(strategy) for name, strategy in required.items()})
        for name in draw(few):
            value[name] = draw(optional[name])
        return value

    return draw_few()


_EDGE = st.one_of(
    ANY,
    st.sampled_from(STRING_EDGES),
    st.sampled_from(INT_EDGES),
    st.sampled_from(TOKENS),
    st.sampled_from(_SCHEDULES),
)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _paths(item, (*path, i))


_HOW = st.sampled_from(["none", "replace", "replace", "replace", "drop", "add"])
_NEW_KEYS = st.sampled_from(["x", "", "Name", "jobId", "\x00"])


def one_mutation(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A plausible value, most often with one spot broken: a member replaced
    by an edge value or another type, removed, nulled, or an unknown one added."""

    @st.composite
    def mutate(draw: Any) -> Any:
        value = draw(valid)
        how = draw(_HOW)
        if how == "none":
            return value
        paths = list(_paths(value))
        path = paths[draw(st.integers(0, len(paths) - 1))]
        if not path:
            return draw(_EDGE) if how == "replace" else value
        parent = value
        for step in path[:-1]:
            parent = parent[step]
        if how == "replace":
            parent[path[-1]] = draw(_EDGE)
        elif how == "drop" and isinstance(parent, dict):
            del parent[path[-1]]
        elif how == "drop":
            parent[path[-1]] = None
        elif isinstance(parent, dict):
            parent[draw(_NEW_KEYS)] = draw(_EDGE)
        else:
            parent.append(draw(_EDGE))
        return value

    return mutate()


# -- requests and replies ------------------------------------------------------------


@dataclass
class Request:
    """One request as it goes on the wire."""

    service: str  # batch, logs, events, raw
    op: str
    method: str = "POST"
    target: str = "/"
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    raw: bytes | None = None  # the exact bytes, for malformed HTTP
    garbage_http: bool = False  # not even HTTP: the app may never see it
    count: list[int] = field(default_factory=list)  # how many were in the body (PutTargets...)

    @property
    def mutating(self) -> bool:
        return self.service != "raw" and not is_read(self.op)

    def wire(self) -> bytes:
        if self.raw is not None:
            return self.raw
        lines = [f"{self.method} {self.target} HTTP/1.1", "Host: 127.0.0.1"]
        lines += [f"{k}: {v}" for k, v in self.headers]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body

    def describe(self) -> str:
        data = self.wire()
        shown = data if len(data) <= 3000 else data[:3000] + b"...(%d bytes)" % len(data)
        return f"[{self.service} {self.op}] {shown!r}"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    will_close: bool


def encode_json(value: Any, ascii_only: bool) -> bytes:
    # NaN and Infinity go out as the (invalid) JSON literals: the server must reject them.
    text = json.dumps(value, ensure_ascii=ascii_only, allow_nan=True)
    return text.encode("utf-8", "surrogatepass")


def resolve(value: Any, names: dict[str, str]) -> Any:
    """The value with the run-time stand-ins (job ids, ...) filled in."""
    if isinstance(value, str):
        for stand_in, real in names.items():
            if stand_in in value:
                value = value.replace(stand_in, real)
        return value
    if isinstance(value, list):
        return [resolve(v, names) for v in value]
    if isinstance(value, dict):
        return {resolve(k, names): resolve(v, names) for k, v in value.items()}
    return value


def sdk_request(
    service: str, op: str, params: Any, *, ascii_only: bool, invocation: str | None
) -> Request:
    """The request an SDK sends for `op` with `params` (already resolved)."""
    if service == "batch" and op in TAG_OPS:
        arn = params.pop("resourceArn", "") if isinstance(params, dict) else ""
        arn = arn if isinstance(arn, str) else str(arn)
        path = "/v1/tags/" + quote(arn.encode("utf-8", "surrogatepass"), safe="")
        # A request line over 64 KiB never reaches shoal: uvicorn answers it.
        too_long = len(path) > 65_000
        if op == "ListTagsForResource":
            return Request(service, op, "GET", path, garbage_http=too_long)
        if op == "UntagResource":
            keys = params.get("tagKeys", []) if isinstance(params, dict) else []
            keys = keys if isinstance(keys, list) else [keys]
            query = "&".join(
                "tagKeys=" + quote(str(k).encode("utf-8", "surrogatepass"), safe="") for k in keys
            )
            target = path + ("?" + query if query else "")
            return Request(service, op, "DELETE", target, garbage_http=len(target) > 65_000)
        body = encode_json(params, ascii_only)
        headers = [("Content-Type", "application/json")]
        return Request(service, op, "POST", path, headers, body, garbage_http=too_long)
    body = encode_json(params, ascii_only)
    if service == "batch":
        headers = [("Content-Type", "application/json")]
        if invocation is not None:
            headers.append(("amz-sdk-invocation-id", invocation))
        return Request(service, op, "POST", f"/v1/{op.lower()}", headers, body)
    prefix = logs_api.TARGET_PREFIX if service == "logs" else events_api.TARGET_PREFIX
    headers = [
        ("Content-Type", "application/x-amz-json-1.1"),
        ("X-Amz-Target", prefix + op),
    ]
    request = Request(service, op, "POST", "/", headers, body)
    if isinstance(params, dict):
        entries = params.get("Targets") if op == "PutTargets" else params.get("Ids")
        if isinstance(entries, list):
            request.count = [len(entries)]
    return request


TRACEBACK_MARKS = (b"Traceback", b'File "', b"most recent call last")
JSON_TYPES = ("application/json", "application/x-amz-json-1.1")


def check_reply(request: Request, reply: Reply) -> str:
    """Assert the invariants every reply must keep; a word for the tally."""
    where = request.describe()
    assert reply.status < 500, f"{reply.status} {reply.body[:2000]!r} for {where}"
    for mark in TRACEBACK_MARKS:
        assert mark not in reply.body, f"traceback in reply {reply.body[:2000]!r} for {where}"
    if request.method == "HEAD":
        return str(reply.status)
    content_type = reply.headers.get("content-type", "")
    if 200 <= reply.status < 300:
        if request.service != "raw" or request.target.startswith("/v1/") or request.target == "/":
            assert content_type in JSON_TYPES, (content_type, where)
            doc = json.loads(reply.body)
            assert isinstance(doc, dict), (reply.body[:500], where)
            if request.service in ("logs", "events"):
                assert content_type == "application/x-amz-json-1.1", where
        return "2xx"
    assert 400 <= reply.status < 500, f"unexpected status {reply.status} for {where}"
    if request.target.startswith("/ui"):  # the dashboard answers in HTML
        return "4xx"
    # Bytes that are not HTTP never reach the app: the protocol's own 400 is
    # AWS-shaped JSON too (api/protocol.py), so the checks below hold for it.
    assert content_type in JSON_TYPES, f"{content_type!r}: {reply.body[:500]!r} for {where}"
    doc = json.loads(reply.body)
    assert isinstance(doc, dict), (reply.body[:500], where)
    code = doc.get("__type", doc.get("code"))
    assert isinstance(code, str) and code, (doc, where)
    message = doc.get("message")
    assert isinstance(message, str) and message.strip(), (doc, where)
    assert "Internal server error" not in message, (doc, where)
    if "x-amzn-errortype" in reply.headers:
        assert reply.headers["x-amzn-errortype"] == code, (reply.headers, doc, where)
    return "4xx"


def mutation_allowed(request: Request, reply: Reply) -> bool:
    """May this reply have changed the store?"""
    if not 200 <= reply.status < 300 or not request.mutating:
        return False
    doc = json.loads(reply.body)
    if request.op in ("PutTargets", "RemoveTargets") and request.count:
        return bool(doc.get("FailedEntryCount", 0) < request.count[0])
    if request.op in ("CancelJobs", "TerminateJobs"):
        return bool(doc.get("successful"))
    return True


# -- the fuzzer: connection, invariants, store snapshots -------------------------------

# Fields that show the time of the read, not the state.
_READ_TIME = frozenset({"statusSummaryLastUpdatedAt"})


def stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k not in _READ_TIME}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


def table_checksum(db: sqlite3.Connection) -> str:
    """A digest of every row of every table."""
    digest = hashlib.sha256()
    tables = db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
    for (table,) in tables.fetchall():
        digest.update(table.encode())
        for row in sorted(repr(row) for row in db.execute(f'SELECT * FROM "{table}"')):
            digest.update(row.encode())
    return digest.hexdigest()


class Fuzzer:
    def __init__(self, server: Server, names: dict[str, str], *, read_only_db: bool = True) -> None:
        self.server = server
        self.names = names
        self.sock: socket.socket | None = None
        path = server.data_dir / "shoal.db"
        self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        self.version = self.data_version()
        self.checksum = table_checksum(self.db)
        self.api: dict[str, Any] | None = None
        self.pending: list[Request] = []
        self.dirty = False
        self.clean_batches = 0
        self.tally: Counter[str] = Counter()
        self.sent = 0
        self.elapsed = 0.0
        self.check_db = read_only_db
        self.admin: tuple[str, str] | None = None  # the key that signs its own calls

    # -- the wire
    def _connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.server.port), timeout=TIMEOUT)

    def exchange(self, data: bytes, method: str, sock: socket.socket) -> Reply:
        # The server may answer (and close) before it has read everything.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        body = response.read()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return Reply(response.status, headers, body, bool(response.will_close))

    def call(self, request: Request) -> Reply:
        """Send on the keep-alive connection; if the server had closed it
        while idle (uvicorn does after 5 s), once more on a fresh one."""
        reused = self.sock is not None
        if self.sock is None:
            self.sock = self._connect()
        try:
            reply = self.exchange(request.wire(), request.method, self.sock)
        except (ConnectionError, http.client.HTTPException):
            self.close()
            if not reused:
                raise
            self.tally["reconnect"] += 1
            self.sock = self._connect()
            reply = self.exchange(request.wire(), request.method, self.sock)
        if reply.will_close:
            self.close()
        return reply

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None

    def call_fresh(self, request: Request) -> Reply | None:
        """Send on a connection of its own; None if the server closed it
        without a reply, or still waits for the rest of a request (allowed
        only for bytes that are not HTTP)."""
        sock = self._connect()
        if request.garbage_http:
            sock.settimeout(GARBAGE_TIMEOUT)
        try:
            try:
                return self.exchange(request.wire(), request.method, sock)
            except (ConnectionError, http.client.HTTPException):
                return None
            except TimeoutError:
                if not request.garbage_http:
                    raise
                self.tally["waiting"] += 1
                return None
        finally:
            sock.close()

    # -- checks
    def data_version(self) -> int:
        return int(self.db.execute("PRAGMA data_version").fetchone()[0])

    def send(self, request: Request, *, fresh: bool = False) -> Reply | None:
        try:
            return self._send(request, fresh=fresh)
        except AssertionError as e:
            if not KEEP_GOING:
                raise
            FAILURES.append(str(e)[:3000])
            self.version, self.checksum, self.api, self.dirty = self.data_version(), "", None, True
            return None

    def _send(self, request: Request, *, fresh: bool = False) -> Reply | None:
        start = time.perf_counter()
        reply = self.call_fresh(request) if fresh else self.call(request)
        self.elapsed += time.perf_counter() - start
        self.sent += 1
        self.alive(request)
        if reply is None:
            assert request.garbage_http, f"connection closed without a reply: {request.describe()}"
            self.tally["no reply"] += 1
            self.health()
        else:
            self.tally[check_reply(request, reply)] += 1
            if STATS and reply.status >= 400 and reply.body.startswith(b"{"):
                message = str(json.loads(reply.body).get("message"))
                MESSAGES[f"{request.op}: {message[:60]}"] += 1
            elif STATS:
                MESSAGES[f"{request.op}: {reply.status}"] += 1
        allowed = reply is not None and mutation_allowed(request, reply)
        version = self.data_version() if self.check_db else self.version
        if version != self.version and not allowed:
            status = reply.status if reply else "no reply"
            raise AssertionError(
                f"the store changed after a request that got {status} "
                f"({reply.body[:500] if reply else b''!r}): {request.describe()}"
            )
        self.version = version
        self.dirty |= allowed
        self.pending.append(request)
        if len(self.pending) >= BATCH:
            self.end_batch()
        return reply

    def alive(self, request: Request) -> None:
        assert self.server.proc is not None
        if self.server.proc.poll() is not None:
            raise AssertionError(f"the server died after {request.describe()}")

    def health(self) -> None:
        with contextlib.closing(self._connect()) as sock:
            reply = self.exchange(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", "GET", sock)
        assert reply.status == 200, reply

    def end_batch(self) -> None:
        """Compare the store with the last baseline, unless a request of this
        batch was allowed to change it (then take new baselines)."""
        batch, self.pending = self.pending, []
        if not self.check_db:
            return
        if self.dirty:
            self.ensure_seeded()
            self.version = self.data_version()
            self.checksum, self.api, self.dirty = table_checksum(self.db), None, False
            return
        checksum = table_checksum(self.db)
        if checksum != self.checksum:
            shown = "\n".join(r.describe()[:600] for r in batch)
            raise AssertionError(f"the store changed in a batch of rejected requests:\n{shown}")
        self.clean_batches += 1
        if self.clean_batches % API_SNAPSHOT_EVERY == 0:
            self.compare_api(batch)

    def ensure_seeded(self) -> None:
        """Bring back the seeded resources that valid random requests deleted
        or disabled, so that later requests still reach deep into the rules."""
        ces = self.api_call("batch", "DescribeComputeEnvironments", {"computeEnvironments": [CE]})
        if not ces.get("computeEnvironments"):
            self.api_call("batch", "CreateComputeEnvironment", SEED_CE)
        elif ces["computeEnvironments"][0].get("state") != "ENABLED":
            self.api_call(
                "batch", "UpdateComputeEnvironment", {"computeEnvironment": CE, "state": "ENABLED"}
            )
        if not self.api_call("batch", "DescribeSchedulingPolicies", {"arns": [POLICY_ARN]}).get(
            "schedulingPolicies"
        ):
            self.api_call("batch", "CreateSchedulingPolicy", SEED_POLICY)
        queues = self.api_call("batch", "DescribeJobQueues", {"jobQueues": [QUEUE, FS_QUEUE]})
        states = {q["jobQueueName"]: q.get("state") for q in queues.get("jobQueues", [])}
        for name, request in ((QUEUE, SEED_QUEUE), (FS_QUEUE, SEED_FS_QUEUE)):
            if name not in states:
                self.api_call("batch", "CreateJobQueue", request)
            elif states[name] != "ENABLED":
                self.api_call("batch", "UpdateJobQueue", {"jobQueue": name, "state": "ENABLED"})
        active = {"jobDefinitionName": DEF, "status": "ACTIVE"}
        if not self.api_call("batch", "DescribeJobDefinitions", active).get("jobDefinitions"):
            self.api_call("batch", "RegisterJobDefinition", SEED_DEFINITION)
        rule = self.api_call("events", "DescribeRule", {"Name": RULE})
        if "Name" not in rule:
            self.api_call("events", "PutRule", SEED_RULE)
            self.api_call("events", "PutTargets", SEED_TARGETS)

    def compare_api(self, batch: list[Request]) -> None:
        snapshot = stable(self.api_snapshot())
        if self.api is not None and snapshot != self.api:
            changed = sorted(
                k for k in snapshot.keys() | self.api.keys() if snapshot.get(k) != self.api.get(k)
            )
            diff = {k: (self.api.get(k), snapshot.get(k)) for k in changed}
            shown = "\n".join(r.describe()[:600] for r in batch)
            raise AssertionError(f"the API view changed: {diff!r:.3000} in a batch of:\n{shown}")
        self.api = snapshot

    # -- what the API shows
    def api_call(self, service: str, op: str, params: dict[str, Any]) -> dict[str, Any]:
        """The reply's document; an error's too (random valid requests may
        have deleted a seeded resource)."""
        request = sdk_request(service, op, params, ascii_only=True, invocation=None)
        if self.admin is not None:
            key, secret = self.admin
            sign(request, key, secret, None, service=service, region="us-east-1", stamp=_stamp())
        reply = self.call(request)
        assert reply.status in (200, 400), f"{reply.status} {reply.body[:1000]!r}"
        doc: dict[str, Any] = json.loads(reply.body)
        return doc

    def pages(self, service: str, op: str, key: str, params: dict[str, Any]) -> list[Any]:
        token_in, token_out = (
            ("NextToken", "NextToken") if service == "events" else ("nextToken",) * 2
        )
        items: list[Any] = []
        params = dict(params)
        while True:
            doc = self.api_call(service, op, params)
            if key not in doc:
                return [doc]
            items += doc[key]
            if not doc.get(token_out):
                return items
            params[token_in] = doc[token_out]

    def api_snapshot(self) -> dict[str, Any]:
        snap: dict[str, Any] = {
            "ce": self.pages("batch", "DescribeComputeEnvironments", "computeEnvironments", {}),
            "queues": self.pages("batch", "DescribeJobQueues", "jobQueues", {}),
            "definitions": self.pages("batch", "DescribeJobDefinitions", "jobDefinitions", {}),
            "policies": self.pages("batch", "ListSchedulingPolicies", "schedulingPolicies", {}),
            "rules": self.pages("events", "ListRules", "Rules", {}),
            "targets": self.pages("events", "ListTargetsByRule", "Targets", {"Rule": RULE}),
            "rule_tags": self.api_call("events", "ListTagsForResource", {"ResourceARN": RULE_ARN}),
        }
        arns = [p["arn"] for p in snap["policies"]]
        for i in range(0, len(arns), 100):
            snap[f"policy_details_{i}"] = self.api_call(
                "batch", "DescribeSchedulingPolicies", {"arns": arns[i : i + 100]}
            )
        for queue in (QUEUE, FS_QUEUE):
            for status in STATUSES:
                snap[f"jobs/{queue}/{status}"] = self.pages(
                    "batch", "ListJobs", "jobSummaryList", {"jobQueue": queue, "jobStatus": status}
                )
        seeded = [self.names[JOB], self.names[ARRAY_JOB]]
        snap["seeded_jobs"] = self.api_call("batch", "DescribeJobs", {"jobs": seeded})
        for arn in (CE_ARN, QUEUE_ARN, DEF_ARN, POLICY_ARN, self.names[JOB_ARN]):
            snap[f"tags/{arn}"] = self.api_call(
                "batch", "ListTagsForResource", {"resourceArn": arn}
            )
        return snap

    def finish(self, phase: str) -> None:
        if not KEEP_GOING:
            self.end_batch()
            if self.check_db:
                self.compare_api([])
        self.health()
        rate = self.sent / self.elapsed if self.elapsed else 0.0
        print(
            f"\nfuzz {phase}: {self.sent} requests in {self.elapsed:.1f} s on the wire "
            f"({rate:.0f}/s), replies {dict(sorted(self.tally.items()))}"
        )
        SENT[phase] = self.sent
        if STATS:
            print("\n".join(f"{n:6d} {m}" for m, n in sorted(MESSAGES.items())))
            MESSAGES.clear()
        self.close()
        self.db.close()
        if FAILURES:
            # One example of each kind of failure (kinds: the text before the request).
            kinds: dict[str, list[str]] = {}
            for failure in FAILURES:
                op = re.search(r" for \[(\w+ \w+)\]", failure)
                kind = failure[:12] + (op.group(1) if op else failure.split(" for [")[0][:200])
                kinds.setdefault(kind, []).append(failure)
            FAILURES.clear()
            shown = "\n\n".join(f"{len(v)} x {v[0]}" for v in kinds.values())
            raise AssertionError(f"{len(kinds)} kinds of failure in phase {phase}:\n\n{shown}")


SENT: dict[str, int] = {}

FUZZ_SETTINGS = {
    "derandomize": True,
    "database": None,
    "deadline": None,
    "phases": [Phase.explicit, Phase.generate],  # the server's state is shared: no shrinking
    "suppress_health_check": list(HealthCheck),
    "print_blob": False,
    # The assertion names the request; hypothesis's own report of a drawn
    # example with a 200 kB string in it helps nobody.
    "verbosity": Verbosity.quiet,
}


def examples(phase: str) -> int:
    return max(50, int(TOTAL * SHARES[phase]))


# -- the seeded server ------------------------------------------------------------------


SEED_CE = {
    "computeEnvironmentName": CE,
    "type": "MANAGED",
    "computeResources": {"type": "EC2", "maxvCpus": 16, "minvCpus": 0},
    "tags": {"team": "fz"},
}
SEED_POLICY = {
    "name": POLICY,
    "fairsharePolicy": {
        "shareDecaySeconds": 60,
        "shareDistribution": [{"shareIdentifier": "A", "weightFactor": 1.0}],
    },
}
_SEED_ORDER = [{"order": 1, "computeEnvironment": CE}]
SEED_QUEUE = {"jobQueueName": QUEUE, "priority": 5, "computeEnvironmentOrder": _SEED_ORDER}
SEED_FS_QUEUE = {
    "jobQueueName": FS_QUEUE,
    "priority": 1,
    "computeEnvironmentOrder": _SEED_ORDER,
    "schedulingPolicyArn": POLICY_ARN,
}
SEED_DEFINITION = {
    "jobDefinitionName": DEF,
    "type": "container",
    "containerProperties": _CONTAINER,
    "parameters": {"who": "fz"},
    "tags": {"d": "1"},
}
SEED_RULE = {
    "Name": RULE,
    "ScheduleExpression": "rate(1 day)",
    "Tags": [{"Key": "k", "Value": "v"}],
}
SEED_TARGETS = {
    "Rule": RULE,
    "Targets": [
        {
            "Id": "t1",
            "Arn": QUEUE_ARN,
            "BatchParameters": {"JobDefinition": DEF, "JobName": "fz-ev"},
        }
    ],
}


def seed(server: Server) -> dict[str, str]:
    """The resources the fuzz requests refer to; the stand-in -> real value map."""
    batch, events = server.client("batch"), server.client("events")
    batch.create_compute_environment(**SEED_CE)
    batch.create_scheduling_policy(**SEED_POLICY)
    batch.create_job_queue(**SEED_QUEUE)
    batch.create_job_queue(**SEED_FS_QUEUE)
    for _ in range(2):
        batch.register_job_definition(**SEED_DEFINITION)
    job = batch.submit_job(jobName="fz-job", jobQueue=QUEUE, jobDefinition=DEF)["jobId"]
    array = batch.submit_job(
        jobName="fz-array",
        jobQueue=QUEUE,
        jobDefinition=DEF,
        arrayProperties={"size": 3},
        dependsOn=[{"jobId": job}],
    )["jobId"]
    batch.submit_job(jobName="fz-share", jobQueue=FS_QUEUE, jobDefinition=DEF, shareIdentifier="A")
    events.put_rule(**SEED_RULE)
    events.put_targets(**SEED_TARGETS)
    return {
        JOB: job,
        JOB_ARN: f"{PREFIX}:job/{job}",
        ARRAY_JOB: array,
        STREAM: f"{DEF}/default/{'0' * 32}",
    }


@pytest.fixture(scope="module")
def fuzz_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Server, dict[str, str]]]:
    server = start_server(tmp_path_factory.mktemp("fuzz"), "--min-timeout-seconds", "1")
    try:
        yield server, seed(server)
    finally:
        server.stop()
    assert_no_traceback(server)


def assert_no_traceback(server: Server) -> None:
    """The server logged no traceback (each one is shown by its last frames and error)."""
    assert server.log_path is not None
    lines = server.log_path.read_text(errors="replace").splitlines()
    found: Counter[str] = Counter()
    for i, line in enumerate(lines):
        if line.startswith("Traceback"):
            j = i + 1
            while j < len(lines) and lines[j].startswith(" "):
                j += 1
            frames = [f.strip()[:150] for f in lines[i:j] if f.strip().startswith("File")]
            error = lines[j][:300] if j < len(lines) else "?"
            found["\n    ".join([error, *frames[-4:]])] += 1
    shown = "\n".join(f"{n} x {tb}" for tb, n in found.most_common())
    assert not found, f"the server logged tracebacks:\n{shown}"


@pytest.fixture
def fuzzer(fuzz_server: tuple[Server, dict[str, str]]) -> Iterator[Fuzzer]:
    server, names = fuzz_server
    f = Fuzzer(server, names)
    yield f
    f.close()


STRATEGIES = {name: ShapeStrategies(name, valid=False) for name in SERVICES}
PLAUSIBLE = {name: ShapeStrategies(name, valid=True) for name in SERVICES}


def choose(strategies: list[st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """A draw from one of `strategies`, each as likely. (`one_of` flattens
    nested one_ofs, even mapped ones, into its own choice.)"""
    index = st.sampled_from(range(len(strategies)))

    @st.composite
    def draw_one(draw: Any) -> Any:
        return draw(strategies[draw(index)])

    return draw_one()


def operation_requests(
    service: str,
    ops: list[str] | tuple[str, ...],
    extra: tuple[st.SearchStrategy[Any], ...] = (),
) -> st.SearchStrategy[Any]:
    """(service, op, params, ascii_only, invocation id) for one of `ops`
    (or drawn by one of the `extra` strategies of (op, params))."""
    chaos, plausible = STRATEGIES[service], PLAUSIBLE[service]
    # Two plausible requests (broken in one spot) for each chaotic one.
    served = [
        st.tuples(st.just(op), choose([plausible.input(op), plausible.input(op), chaos.input(op)]))
        for op in ops
    ]
    # The operations shoal declines weigh as one together.
    unserved = choose([st.tuples(st.just(op), chaos.input(op)) for op in _unserved(service, ops)])
    invocation = st.one_of(
        st.none(), st.uuids().map(str), st.sampled_from(["", "x" * 300, "fz-same-token"])
    )
    operations = choose([*served, *extra, unserved])
    return st.tuples(st.just(service), operations, st.booleans(), invocation)


def send_generated(fuzzer: Fuzzer, drawn: Any) -> None:
    service, (op, params), ascii_only, invocation = drawn
    params = resolve(params, fuzzer.names)
    request = sdk_request(service, op, params, ascii_only=ascii_only, invocation=invocation)
    fuzzer.send(request)


# -- the tests ----------------------------------------------------------------------------


def expect_error(
    fuzzer: Fuzzer, service: str, op: str, params: dict[str, Any], code: str, words: str
) -> None:
    """A request the fuzzer once got a 5xx for: now a 4xx of `code` whose
    message has `words`, and (checked by `send`) the store unchanged."""
    request = sdk_request(
        service, op, resolve(params, fuzzer.names), ascii_only=True, invocation=None
    )
    reply = fuzzer.send(request)
    assert reply is not None and 400 <= reply.status < 500, (reply, request.describe())
    doc = json.loads(reply.body)
    assert doc["__type"] == code and words in doc["message"], (doc, request.describe())


# The bugs the fuzzer found, each as it was found (see the fixes' comments).
REGRESSIONS: list[tuple[str, str, dict[str, Any], str, str]] = [
    # service/logs.py: isdigit() took '²', then int() failed.
    ("logs", "DescribeLogGroups", {"nextToken": "²"}, "InvalidParameterException", "nextToken"),
    ("logs", "DescribeLogGroups", {"nextToken": "9" * 5000}, "InvalidParameterException", "next"),
    # service/logs.py: '..' named the data directory: shoal.db was read as a log stream.
    (
        "logs",
        "GetLogEvents",
        {"logGroupName": "..", "logStreamName": "shoal.db", "startTime": 0},
        "ResourceNotFoundException",
        "log group does not exist",
    ),
    (
        "logs",
        "DescribeLogStreams",
        {"logGroupIdentifier": f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:..:*"},
        "ResourceNotFoundException",
        "log group does not exist",
    ),
    # service/logs.py: a name longer than a file name: OSError ENAMETOOLONG.
    (
        "logs",
        "DescribeLogStreams",
        {"logGroupName": "x" * 300},
        "ResourceNotFoundException",
        "does not exist",
    ),
    (
        "logs",
        "FilterLogEvents",
        {"logGroupName": "x" * 513},
        "InvalidParameterException",
        "at most 512",
    ),
    # domain/schedules.py: the next fire time did not fit SQLite's INTEGER.
    (
        "events",
        "PutRule",
        {"Name": "fz-big", "ScheduleExpression": "rate(99999999999999999999 days)"},
        "ValidationException",
        "too large",
    ),
    # service/events.py: firing the rule walked this Input into RecursionError,
    # at every tick, stopping the other rules due with it.
    (
        "events",
        "PutTargets",
        {"Rule": RULE, "Targets": [{**_TARGET, "Input": DEEP_INPUT}]},
        "ValidationException",
        "nested more than 64",
    ),
    # service/jobs.py: '²' (int() failed) and > 2**63 (SQLite overflow) as epoch ms.
    *(
        (
            "batch",
            "ListJobs",
            {"jobQueue": QUEUE, "filters": [{"name": "AFTER_CREATED_AT", "values": [value]}]},
            "ClientException",
            "epoch milliseconds",
        )
        for value in ("²", "9223372036854775808", "9" * 5000)
    ),
    # service/job_definitions.py: int() refuses more than 4300 digits.
    (
        "batch",
        "SubmitJob",
        {"jobName": "fz", "jobQueue": QUEUE, "jobDefinition": f"{DEF}:{'9' * 5000}"},
        "ClientException",
        "out of range",
    ),
]


def test_regressions(fuzzer: Fuzzer) -> None:
    """Each bug the fuzzer found, as a plain request: a clear 4xx, nothing stored."""
    for service, op, params, code, words in REGRESSIONS:
        expect_error(fuzzer, service, op, params, code, words)
    # api/model.py: the message showed repr() of the value: RecursionError.
    headers = [("Content-Type", "application/json")]
    for member in ("containerOverrides", "parameters"):
        body = deep_json(member, 1000)
        reply = fuzzer.send(Request("raw", "deep", "POST", "/v1/submitjob", headers, body))
        assert reply is not None and reply.status == 400, reply
        assert "got list [[[[...]]]]" in json.loads(reply.body)["message"], reply
    fuzzer.finish("regressions")


def test_batch_model(fuzzer: Fuzzer) -> None:
    """Every Batch operation shoal serves (and the ones it declines), from the model."""
    # The ARN (in the path) and UntagResource's keys (in the query) are not
    # body members: they are drawn here.
    arns = st.one_of(st.sampled_from(_ANY_ARN), st.sampled_from(STRING_EDGES), st.text())
    keys = st.lists(st.one_of(st.sampled_from(KNOWN["tagkeys"]), st.text(max_size=8)), max_size=4)

    def tag_request(op: str, shapes: ShapeStrategies) -> st.SearchStrategy[Any]:
        return st.tuples(
            st.just(op),
            st.builds(
                lambda body, arn, keys: {
                    **(body if isinstance(body, dict) else {"tags": body}),
                    "resourceArn": arn,
                    "tagKeys": keys,
                },
                shapes.input(op),
                arns,
                keys,
            ),
        )

    tags = tuple(
        choose([tag_request(op, PLAUSIBLE["batch"]), tag_request(op, STRATEGIES["batch"])])
        for op in TAG_OPS
    )
    requests = operation_requests("batch", BATCH_OPS, tags)

    @settings(max_examples=examples("batch"), **FUZZ_SETTINGS)
    @given(requests)
    def run(drawn: Any) -> None:
        send_generated(fuzzer, drawn)

    run()
    fuzzer.finish("batch")


def test_json_services(fuzzer: Fuzzer) -> None:
    """CloudWatch Logs reads and EventBridge, from their models."""
    requests = st.one_of(
        operation_requests("logs", LOGS_OPS), operation_requests("events", EVENTS_OPS)
    )

    @settings(max_examples=examples("json"), **FUZZ_SETTINGS)
    @given(requests)
    def run(drawn: Any) -> None:
        send_generated(fuzzer, drawn)

    run()
    fuzzer.finish("json")


# -- raw malformed input ----------------------------------------------------------------

# fmt: off
_RAW_PATHS = [
    "/v1/submitjob", "/v1/createjobqueue", "/v1/describejobs", "/v1/listjobs",
    "/v1/registerjobdefinition", "/v1/updatecomputeenvironment", "/v1/createschedulingpolicy",
    f"/v1/tags/{quote(QUEUE_ARN, safe='')}", "/prefix/v1/describejobqueues", "/shoal/v1/interrupt",
    "/",
]
_TARGETS = [f"{logs_api.TARGET_PREFIX}{op}" for op in LOGS_OPS] + [
    f"{events_api.TARGET_PREFIX}{op}" for op in EVENTS_OPS
]
_BAD_JSON = [
    b"{", b"}", b'{"a":}', b"{'a': 1}", b'{"a": 1,}', b'{"a": NaN}', b'{"a": Infinity}',
    b"\xef\xbb\xbf{}", b"{}garbage", b"{} {}", b"\x00", b'{"a": "\xff"}', b'{"\\ud800": 1}',
    b'{"a": 1e999}', b'{"a": -}', b'{"a": 0x10}', b'{"a": 01}', b"[", b'"', b"nul",
    b'{"a": 18446744073709551616}', b'{"a": "\\u00"}', b"  \n\t ", b"\xfe\xff\x00{\x00}",
    b'{"jobs": [1, 2, 3' + b", 4" * 10_000,
]
_NOT_OBJECTS = [
    b"[]", b"[{}]", b'"x"', b"1", b"-1.5", b"null", b"true", b"false", b"[" + b"1," * 999 + b"1]",
]
_CONTENT_TYPES = [
    None, "", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
    "application/json; charset=latin-1", "application/xml", "application/x-amz-json-1.0", "*/*",
]
_TARGET_VALUES = [
    "", "Logs_20140328.", "AWSEvents.", "AWSEvents.putrule", "Logs_20140328.Nope",
    "AWSEvents.PutRule.Extra", "DynamoDB_20120810.GetItem", "AWSEvents.__init__",
    "Logs_20140328.HANDLERS", " AWSEvents.PutRule", "AWSEvents.PutRule ",
    "AWSEvents." + "x" * 10_000,
]
_METHODS = ["GET", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "TRACE", "FOO", "post"]
_HTTP_METHODS = ("GET", "PUT", "POST", "PATCH", "DELETE", "OPTIONS", "HEAD", "TRACE")
_PATHS = [
    "/", "/v1", "/v1/", "/v1/nope", "/v1/SUBMITJOB", "/v1/%73ubmitjob", "/v1/tags", "/v1/tags/",
    "/v1/tags/%", "/v1/tags/%zz", "/v1/tags/%ff%fe", "/v1/tags/%00", "/v1/tags/%2F%2F..%2F",
    "/v1/tags/" + "%2F" * 2000, "/v1/tags/" + quote(f"{PREFIX}:job/nope", safe=""),
    f"/v1/tags/{QUEUE_ARN}", "/v1/tags/a/b/c", "//v1//submitjob", "/v1/submitjob/",
    "/v1/submitjob?x=1", "/v1/submitjob#frag", "/health/", "/metrics", "/shoal", "/shoal/v1/",
    "/../../etc/passwd", "/v1/" + "a" * 20_000, "/" + "%" * 100, "*", "/v1/tags/?tagKeys=%",
    "/v1/tags/x?tagKeys=" + "%ff" * 10, "/v1/tags/x?" + "&" * 1000, "/v1/tags/x?tagKeys=a&tagKeys=",
    "http://127.0.0.1/v1/listjobs", "/v1/tags/%E2%80%AE",
]
_UI_PATHS = [  # the dashboard's pages (HTML), read only
    "/ui", "/ui/", "/ui/jobs", "/ui/jobs/nope", "/ui/jobs/%ff", "/ui/jobs/x/y/z/w",
    "/ui/jobs?page=99999999999999999999", "/ui/jobs?page=-1", "/ui/jobs?status=%C2%B2",
    "/ui/jobs?q=%ff%00", "/ui/queues/%00", "/ui/jobs/nope/logs?attempt=%C2%B2", "/ui/" + "a" * 5000,
]
_INTERRUPTS = [
    {}, {"jobId": 1}, {"jobId": "nope"}, {"jobId": JOB}, {"computeEnvironment": CE},
    {"computeEnvironment": CE_ARN}, {"computeEnvironment": "arn:aws:batch:::job/x"},
    {"computeEnvironment": None, "jobId": None}, {"jobId": JOB, "computeEnvironment": CE},
    {"jobId": ["x"]}, {"jobId": "x" * 100_000},
]
_JSON = [("Content-Type", "application/json")]
_JSON_11 = "application/x-amz-json-1.1"
_DEEP_MEMBERS = [  # (path, headers, member) where the member's shape is checked
    ("/v1/submitjob", _JSON, "containerOverrides"),
    ("/v1/describecomputeenvironments", _JSON, "computeEnvironments"),
    ("/v1/describejobs", _JSON, "jobs"),
    ("/v1/registerjobdefinition", _JSON, "parameters"),
    ("/", [("Content-Type", _JSON_11), ("X-Amz-Target", "AWSEvents.PutTargets")], "Targets"),
    ("/", [("Content-Type", _JSON_11), ("X-Amz-Target", "Logs_20140328.GetLogEvents")], "limit"),
]
_CHUNKED = [
    b"2\r\n{}\r\n0\r\n\r\n", b"zz\r\n{}\r\n0\r\n\r\n", b"1\r\n{\r\n1\r\n}\r\n0\r\n\r\n",
    b"ffffffffffffffffff\r\n{}\r\n0\r\n\r\n", b"0\r\n\r\n", b"2\r\n[]\r\n0\r\n\r\n",
]
_NOT_HTTP = [
    b"GET\r\n\r\n", b"POST /v1/listjobs HTTP/9.9\r\nHost: x\r\n\r\n",
    b"POST /v1/listjobs HTTP/1.0\r\n\r\n",
    b"POST /v1/listjobs HTTP/1.1\r\nContent-Length: -1\r\n\r\n{}",
    b"POST /v1/listjobs HTTP/1.1\r\nContent-Length: x\r\n\r\n{}",
    b"POST /v1/listjobs HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    b"POST /v1/listjobs HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    b"POST /v1/listjobs HTTP/1.1\r\nHost: x\r\n: empty\r\n\r\n",
    b"POST /v1/listjobs HTTP/1.1\r\nContent-Type: application/json\x7f\r\n"
    b"Content-Length: 2\r\n\r\n{}",
    b"POST /v1/listjobs HTTP/1.1\nHost: x\n\n", b"POST  /v1/listjobs  HTTP/1.1\r\n\r\n",
    b"\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
]
_RAW_KINDS = [
    "bad-json", "not-object", "deep", "huge", "content-type", "target", "path", "method",
    "long-header", "binary", "short-length", "chunked", "interrupt", "not-http", "random-bytes",
]
# fmt: on


def deep_json(member: str, depth: int, opener: bytes = b"[", closer: bytes = b"]") -> bytes:
    """`{member: [[[...1...]]]}`, `depth` levels down (json.dumps would recurse)."""
    return b'{"' + member.encode() + b'": ' + opener * depth + b"1" + closer * depth + b"}"


def _no_newlines(junk: bytes) -> bytes:
    return junk.replace(b"\r", b"").replace(b"\n", b"")


def _raw(method: str, path: str, headers: list[tuple[str, str]], rest: bytes) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    return head.encode("latin-1") + rest


@st.composite
def raw_request(draw: Any) -> Request:
    """Bytes an SDK would never send. `garbage_http`: not even valid HTTP,
    which uvicorn may answer with its own plain-text 400 (or not at all)."""
    kind = draw(st.sampled_from(_RAW_KINDS))
    path = draw(st.sampled_from(_RAW_PATHS))
    target = draw(st.sampled_from(_TARGETS))
    if path == "/":
        headers = [("Content-Type", "application/x-amz-json-1.1"), ("X-Amz-Target", target)]
    else:
        headers = [("Content-Type", "application/json")]

    def body(data: bytes, method: str = "POST", where: str = path) -> Request:
        return Request("raw", kind, method, where, headers, data)

    if kind == "bad-json":
        return body(draw(st.sampled_from(_BAD_JSON)))
    if kind == "not-object":
        return body(draw(st.sampled_from(_NOT_OBJECTS)))
    if kind == "deep":  # JSON parsers stop at some depth; what is below must not break
        depth = draw(st.sampled_from([50, 900, 1000, 1023, 1024, 5000, 100_000]))
        where, headers, member = draw(st.sampled_from(_DEEP_MEMBERS))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        return body(deep_json(member, depth, opener, closer), where=where)
    if kind == "huge":  # over the server's 1 MiB cap
        size = draw(st.sampled_from([1024 * 1024 + 1, 2 * 1024 * 1024]))
        filler = draw(st.sampled_from([b"x", b" ", b"["]))
        return body(b'{"jobName": "' + filler * size + b'"}')
    if kind == "content-type":
        ctype = draw(st.sampled_from(_CONTENT_TYPES))
        headers = [h for h in headers if h[0] != "Content-Type"]
        headers += [("Content-Type", ctype)] if ctype is not None else []
        return body(b'{"jobQueue": "fz-q"}')
    if kind == "target":
        printable = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30)
        value = draw(st.one_of(st.sampled_from(_TARGET_VALUES), printable))
        headers = [("Content-Type", "application/x-amz-json-1.1"), ("X-Amz-Target", value)]
        return body(b"{}", where="/")
    if kind == "path":
        where = draw(st.sampled_from(_PATHS + _UI_PATHS))
        method = (
            "GET" if where.startswith("/ui") else draw(st.sampled_from(["POST", "GET", "DELETE"]))
        )
        if method == "GET":
            headers = []
        return body(b"" if method == "GET" else b"{}", method, where)
    if kind == "method":
        method = draw(st.sampled_from(_METHODS))
        request = body(b"{}", method)
        request.garbage_http = method not in _HTTP_METHODS  # httptools knows registered ones
        return request
    if kind == "long-header":
        size = draw(st.sampled_from([100, 8_000, 70_000]))
        names = ["X-Long", "amz-sdk-invocation-id", "X-Amz-Target", "Authorization"]
        name = draw(st.sampled_from(names))
        many = draw(st.sampled_from([1, 200]))
        headers = headers + [(f"{name}{i or ''}", "v" * size) for i in range(many)]
        return body(b"{}")
    if kind == "interrupt":
        data = encode_json(draw(st.sampled_from(_INTERRUPTS)), ascii_only=True)
        return body(data, where="/shoal/v1/interrupt")
    if kind == "binary":
        junk = draw(st.binary(min_size=1, max_size=64))
        where = draw(st.sampled_from(["body", "path", "header", "target"]))
        if where == "body":
            return body(junk)
        line = b"/v1/tags/" + _no_newlines(junk).replace(b" ", b"_") if where == "path" else b""
        extra = b"X-Junk: " + _no_newlines(junk) + b"\r\n" if where == "header" else b""
        head = b"POST " + (line or path.encode()) + b" HTTP/1.1\r\nHost: x\r\n" + extra
        for k, v in headers:
            value = v.encode()
            if where == "target" and k == "X-Amz-Target":
                value = b"AWSEvents." + _no_newlines(junk)
            head += k.encode() + b": " + value + b"\r\n"
        raw = head + b"Content-Length: 2\r\n\r\n{}"
        return Request("raw", kind, "POST", path, raw=raw, garbage_http=True)
    if kind == "short-length":  # the rest of the body is read as the next request
        data = b'{"jobName": "fz-short", "jobQueue": "fz-q", "jobDefinition": "fz-def"}'
        cut = draw(st.integers(0, len(data) - 1))
        raw = _raw("POST", path, headers, b"Content-Length: %d\r\n\r\n" % cut + data)
        return Request("raw", kind, "POST", path, raw=raw, garbage_http=True)
    if kind == "chunked":
        length = draw(st.sampled_from([b"", b"Content-Length: 2\r\n"]))
        rest = (
            b"Transfer-Encoding: chunked\r\n" + length + b"\r\n" + draw(st.sampled_from(_CHUNKED))
        )
        raw = _raw("POST", path, headers, rest)
        return Request("raw", kind, "POST", path, raw=raw, garbage_http=True)
    if kind == "not-http":
        return Request("raw", kind, raw=draw(st.sampled_from(_NOT_HTTP)), garbage_http=True)
    junk = draw(st.binary(min_size=1, max_size=200))
    return Request("raw", kind, raw=junk + b"\r\n\r\n", garbage_http=True)


def test_raw_malformed(fuzzer: Fuzzer) -> None:
    """Bytes an SDK would never send, each on a connection of its own."""

    @settings(max_examples=examples("raw"), **FUZZ_SETTINGS)
    @given(raw_request())
    def run(request: Request) -> None:
        fuzzer.send(request, fresh=True)

    run()
    fuzzer.finish("raw")


def test_lying_content_length(fuzzer: Fuzzer) -> None:
    """A Content-Length longer than the body: the server waits, the client
    gives up and leaves; nothing of the half request may be stored."""
    body = b'{"jobName": "fz-lie", "jobQueue": "fz-q", "jobDefinition": "fz-def"}'
    for path, extra in [("/v1/submitjob", 1), ("/v1/createschedulingpolicy", 1000), ("/", 5)]:
        headers = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        if path == "/":
            headers += "X-Amz-Target: AWSEvents.PutRule\r\n"
        raw = headers.encode() + b"Content-Length: %d\r\n\r\n" % (len(body) + extra) + body
        with contextlib.closing(fuzzer._connect()) as sock:
            sock.settimeout(0.3)
            sock.sendall(raw)
            with pytest.raises(TimeoutError):
                sock.recv(1)
        fuzzer.sent += 1
        fuzzer.alive(Request("raw", "lying-length", raw=raw))
        fuzzer.health()
        assert fuzzer.data_version() == fuzzer.version, "a half-sent request changed the store"
    time.sleep(0.2)  # the server has seen the disconnects
    assert fuzzer.data_version() == fuzzer.version
    assert table_checksum(fuzzer.db) == fuzzer.checksum
    fuzzer.finish("lying-length")


# -- a short phase with the engine on: Logs reads of a real stream ----------------------


def test_engine_logs(tmp_path: Path) -> None:
    """The Logs reads (and DescribeJobs) on a server whose engine ran a job
    that printed 302 lines, the last without a newline."""
    server = start_server(tmp_path, *ENGINE_ARGS)
    try:
        batch = server.client("batch")
        batch.create_compute_environment(
            computeEnvironmentName=CE,
            type="MANAGED",
            computeResources={"type": "EC2", "maxvCpus": 4, "minvCpus": 0},
        )
        batch.create_job_queue(
            jobQueueName=QUEUE,
            priority=1,
            computeEnvironmentOrder=[{"order": 1, "computeEnvironment": CE}],
        )
        script = "for i in $(seq 1 300); do echo line-$i; done; echo é; printf 'no newline'"
        batch.register_job_definition(
            jobDefinitionName=DEF,
            type="container",
            containerProperties={
                "image": "busybox",
                "command": ["sh", "-c", script],
                "resourceRequirements": [
                    {"type": "VCPU", "value": "1"},
                    {"type": "MEMORY", "value": "64"},
                ],
            },
        )
        job = batch.submit_job(jobName="fz-engine", jobQueue=QUEUE, jobDefinition=DEF)["jobId"]
        detail = wait_for(batch, job, timeout=30)
        assert detail["status"] == "SUCCEEDED", detail
        names = {
            JOB: job,
            JOB_ARN: f"{PREFIX}:job/{job}",
            ARRAY_JOB: job,
            STREAM: detail["container"]["logStreamName"],
        }
        # The engine may write at any time (it owns the store's job states),
        # so only the reply invariants hold here; the store is checked above.
        fuzzer = Fuzzer(server, names, read_only_db=False)
        # service/logs.py: FilterLogEvents' token was trusted to hold offsets.
        for token in (_b64("[1]"), _b64(f'{{"{STREAM}": -1}}'), _b64(f'{{"{STREAM}": "x"}}')):
            expect_error(
                fuzzer,
                "logs",
                "FilterLogEvents",
                {"logGroupName": LOG_GROUP, "nextToken": token},
                "InvalidParameterException",
                "nextToken is invalid",
            )
        requests = st.one_of(
            operation_requests("logs", LOGS_OPS),
            st.tuples(
                st.just("batch"),
                st.tuples(st.just("DescribeJobs"), STRATEGIES["batch"].input("DescribeJobs")),
                st.just(True),
                st.none(),
            ),
        )

        @settings(max_examples=examples("engine"), **FUZZ_SETTINGS)
        @given(requests)
        def run(drawn: Any) -> None:
            send_generated(fuzzer, drawn)

        run()
        fuzzer.finish("engine")
    finally:
        shutdown(server)
    assert_no_traceback(server)


# -- a server with access keys: signatures, roles, Authorization garbage -----------------

ADMIN, READER, SUBMITTER = "AKIDSHOALTEST", "AKIDFZREAD", "AKIDFZSUBMIT"
# key id -> (secret, session token, role); the admin is conftest's, so that
# `seed` (boto3) can sign.
AUTH_KEYS = {
    ADMIN: ("secret", None, "admin"),
    READER: ("read-secret", "fz-token", "read"),
    SUBMITTER: ("submit-secret", None, "submit"),
}
# How a signed request is spoiled after (or while) it is signed: each must get a 403.
TAMPERS = [
    "body", "date-past", "date-future", "date-garbage", "region", "service-scope",
    "unknown-key", "wrong-secret", "token-missing", "token-wrong", "signature", "unsent-header",
    "no-auth", "garbage-auth", "basic-on-api",
]  # fmt: skip
_AUTH_GARBAGE = st.one_of(
    st.sampled_from(
        [
            "", "AWS4-HMAC-SHA256", "AWS4-HMAC-SHA256 Credential=", "Bearer x", "Basic",
            "AWS4-HMAC-SHA256 Credential=AKIDSHOALTEST/20260101/us-east-1/batch/aws4_request, "
            "SignedHeaders=host, Signature=" + "0" * 64,
            "AWS4-HMAC-SHA256 Credential=AKIDSHOALTEST/²²²²²²²²/us-east-1/batch/aws4_request, "
            "SignedHeaders=host, Signature=" + "0" * 64,
            "aws4-hmac-sha256 Credential=x/1/2/3/aws4_request, SignedHeaders=h, Signature=z",
            "AWS4-HMAC-SHA256 Credential=" + "A" * 70_000,
        ]
    ),
    # (Not DEL, which no header value may hold: uvicorn answers such a request
    # as malformed HTTP before any app sees it; the garbage-HTTP fuzz covers that.)
    st.text(
        st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f"), max_size=80
    ),
)  # fmt: skip


def auth_credentials(path: Path) -> Path:
    keys = [
        {"accessKeyId": k, "secretAccessKey": secret, "role": role}
        | ({"sessionToken": token} if token else {})
        | ({"queues": [QUEUE]} if role == "submit" else {})
        for k, (secret, token, role) in AUTH_KEYS.items()
    ]
    path.write_text(json.dumps({"keys": keys}))
    return path


def sign(
    request: Request, key: str, secret: str, token: str | None, *, service: str, region: str,
    stamp: str,
) -> None:  # fmt: skip
    """Add SigV4 headers as botocore does, with botocore's signer (at `stamp`)."""
    request.headers += [("X-Amz-Date", stamp)] + (
        [("X-Amz-Security-Token", token)] if token else []
    )
    aws = AWSRequest(
        method=request.method,
        url="http://127.0.0.1" + request.target,
        data=request.body,
        headers=dict(request.headers),
    )
    aws.context["timestamp"] = stamp
    signer = SigV4Auth(Credentials(key, secret, token), service, region)
    signature = signer.signature(signer.string_to_sign(aws, signer.canonical_request(aws)), aws)
    signed = signer.signed_headers(signer.headers_to_sign(aws))
    scope = f"{key}/{stamp[:8]}/{region}/{service}/aws4_request"
    request.headers.append(
        (
            "Authorization",
            f"AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders={signed}, Signature={signature}",
        )
    )


def _stamp(offset_seconds: float = 0.0) -> str:
    at = time.time() + offset_seconds
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(at))


def signed_request(
    drawn: Any, key: str, tamper: str, garbage: str, names: dict[str, str]
) -> Request:
    """The generated request, signed with `key`, then spoiled by `tamper`."""
    service, (op, params), ascii_only, invocation = drawn
    request = sdk_request(
        service, op, resolve(params, names), ascii_only=ascii_only, invocation=invocation
    )
    secret, token, _ = AUTH_KEYS[key]
    region, scope_service, stamp = "us-east-1", service, _stamp()
    if tamper == "date-past":
        stamp = _stamp(-600)
    elif tamper == "date-future":
        stamp = _stamp(600)
    elif tamper == "region":
        region = "eu-west-1"
    elif tamper == "service-scope":
        scope_service = "s3"  # signed for another service: the signature still verifies
    elif tamper == "unknown-key":
        key = "AKIDFZNOBODY"
    elif tamper == "wrong-secret":
        secret = secret + "x"
    elif tamper == "token-missing":
        token = None
    elif tamper == "token-wrong":
        token = (token or "") + "x"
    if tamper not in ("no-auth", "garbage-auth", "basic-on-api"):
        sign(request, key, secret, token, service=scope_service, region=region, stamp=stamp)
    if tamper == "body":
        request.body += b" "
    elif tamper == "date-garbage":
        request.headers = [(k, "yesterday" if k == "X-Amz-Date" else v) for k, v in request.headers]
    elif tamper == "signature":
        request.headers = [
            (k, v[:-64] + "0" * 64 if k == "Authorization" else v) for k, v in request.headers
        ]
    elif tamper == "unsent-header":  # signed, then not sent
        sent = [k for k, _ in request.headers]
        gone = "Content-Type" if "Content-Type" in sent else "X-Amz-Date"
        request.headers = [h for h in request.headers if h[0] != gone]
    elif tamper == "garbage-auth":
        request.headers.append(("Authorization", garbage))
    elif tamper == "basic-on-api":
        basic = base64.b64encode(f"{ADMIN}:{AUTH_KEYS[ADMIN][0]}".encode()).decode()
        request.headers.append(("Authorization", f"Basic {basic}"))
    return request


@pytest.fixture(scope="module")
def auth_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Server, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("fuzz-auth")
    credentials = auth_credentials(tmp / "keys.json")
    server = start_server(tmp, "--min-timeout-seconds", "1", "--credentials", str(credentials))
    try:
        yield server, seed(server)
    finally:
        server.stop()
    assert_no_traceback(server)


def test_auth(auth_server: tuple[Server, dict[str, str]]) -> None:
    """With access keys, every request must be signed. Requests generated as
    above, signed by botocore's signer with an admin, read or submit key, or
    spoiled (body changed after signing, clock off by 10 minutes, other
    region, unknown key, wrong secret or token, bad signature, a signed header
    not sent, no or garbage Authorization): a spoiled one gets a 403 and
    changes nothing; a key's role bounds what succeeds."""
    server, names = auth_server
    fuzzer = Fuzzer(server, names)
    fuzzer.admin = (ADMIN, AUTH_KEYS[ADMIN][0])
    requests = st.one_of(
        operation_requests("batch", BATCH_OPS),
        operation_requests("logs", LOGS_OPS),
        operation_requests("events", EVENTS_OPS),
    )
    plans = st.tuples(
        requests,
        st.sampled_from(sorted(AUTH_KEYS)),
        st.sampled_from(["none"] * len(TAMPERS) + TAMPERS),
        _AUTH_GARBAGE,
    )

    @settings(max_examples=examples("auth"), **FUZZ_SETTINGS)
    @given(plans)
    def run(plan: Any) -> None:
        drawn, key, tamper, garbage = plan
        request = signed_request(drawn, key, tamper, garbage, names)
        if tamper == "garbage-auth" and len(garbage) > 60_000:
            request.garbage_http = True
        reply = fuzzer.send(request)
        if reply is None:
            return
        role = AUTH_KEYS[key][2]
        harmless = ("none", "service-scope") + (("token-missing",) if key != READER else ())
        if tamper not in harmless:
            assert reply.status == 403, f"{tamper}: {reply.status} {reply.body[:300]!r}"
        elif 200 <= reply.status < 300 and request.mutating:
            allowed = role == "admin" or (
                role == "submit" and request.op in ("SubmitJob", "CancelJob", "TerminateJob")
            )
            assert allowed, f"{role} did {request.op}: {request.describe()}"

    run()
    fuzzer.finish("auth")


@pytest.mark.parametrize("case", ["basic-non-ascii-secret", "host-bracket"])
def test_auth_regressions(tmp_path: Path, case: str) -> None:
    """Found by the fuzzer in api/auth.py, both 500s to anyone who knew an
    access key id: hmac.compare_digest on a non-ASCII Basic secret raised
    TypeError; a Host with an unbalanced '[' made urlsplit raise ValueError."""
    server = start_server(tmp_path, "--credentials", str(auth_credentials(tmp_path / "k.json")))
    try:
        if case == "basic-non-ascii-secret":
            basic = base64.b64encode(f"{ADMIN}:\u00e9".encode()).decode()
            request = Request(
                "raw", "auth", "GET", "/metrics", [("Authorization", f"Basic {basic}")]
            )
        else:
            request = sdk_request(
                "batch", "DescribeJobQueues", {}, ascii_only=True, invocation=None
            )
            sign(
                request, ADMIN, "secret", None, service="batch", region="us-east-1", stamp=_stamp()
            )
            request.raw = request.wire().replace(b"Host: 127.0.0.1", b"Host: [", 1)
        fuzzer = Fuzzer(server, {})
        reply = fuzzer.call_fresh(request)
        fuzzer.db.close()
        assert reply is not None and reply.status < 500, reply
    finally:
        server.stop()


def test_totals(fuzz_server: tuple[Server, dict[str, str]]) -> None:
    """The phases together sent what the issue asks for, and the server is well."""
    server, _ = fuzz_server
    total = sum(SENT.values())
    print(f"\nfuzz total: {total} requests {dict(SENT)}")
    if {"batch", "json", "raw"} <= SENT.keys():
        assert total >= min(10_000, int(TOTAL * 0.95)), SENT
    assert server.proc is not None and server.proc.poll() is None
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    try:
        conn.request("GET", "/health")
        assert conn.getresponse().status == 200
    finally:
        conn.close()
