"""The seed's workload end to end (examples/seed-pipeline): a real S3 server,
the seed's image and job script, an array job through the aws CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def python_image() -> bool:
    found = subprocess.run(
        ["docker", "image", "inspect", "shoal-test/python:1"], capture_output=True, check=False
    )
    return found.returncode == 0


@pytest.mark.skipif(
    not python_image(), reason="no dockerd or no shoal-test/python:1 (scripts/build-test-images)"
)
def test_the_seed_pipeline_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "seed-pipeline" / "run.py"), "--files", "3"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCEEDED" in result.stdout
    assert "all 3 results" in result.stdout
