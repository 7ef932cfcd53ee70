"""Pure rules of AWS Batch: records, limits, ARNs, substitution. Stdlib only."""
