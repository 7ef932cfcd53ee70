"""The running machinery: dispatch, placement, attempts, retries, reattach."""
