"""Executors run one attempt of a job each: process, docker, ray."""
