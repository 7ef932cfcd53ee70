"""Job output: appended while jobs run, read back with CloudWatch Logs semantics."""
