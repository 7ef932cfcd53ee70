"""The wire edges: AWS Batch rest-json on /v1/..., and the one error table."""
