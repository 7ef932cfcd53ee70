"""Use-cases: the only entry points the API, CLI and dashboard call.

Requests and responses are AWS-shaped dicts (already checked against the
service model's types by the caller); the rules are in `shoal.domain`.
"""
