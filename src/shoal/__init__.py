"""shoal: a self-hosted batch computing service that speaks the AWS Batch API."""

__version__ = "0.1.0"
