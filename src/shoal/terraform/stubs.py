"""Plausible attributes for what shoal does not run.

A Batch configuration references IAM roles, subnets, security groups, buckets,
ECR repositories, log groups and modules such as the VPC module. shoal
creates none of them; it gives them attributes that look like AWS's (ids,
ARNs with the provider's region and shoal's account), so the references in
the Batch resources resolve. Every value is derived from the resource's
address, so applying again computes the same values and changes nothing.

An ECR repository's `repository_url` is its *name*, so an image written
`"${aws_ecr_repository.batch.repository_url}:latest"` is the local image
`batch-processor-job:latest`; `--repository-url NAME=URL` overrides it.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ACCOUNT = "123456789012"  # shoal's default account (`shoal server --account-id`)


@dataclass(frozen=True, slots=True, kw_only=True)
class Environment:
    """What every stand-in shares: the region and account in ARNs, and ECR overrides."""

    region: str = "us-east-1"
    account: str = ACCOUNT
    # Repository name or resource address -> the URL its repository_url should be.
    repository_urls: Mapping[str, str] = field(default_factory=dict)


def digest(address: str) -> bytes:
    return hashlib.sha256(address.encode()).digest()


def hex_id(address: str, length: int = 17) -> str:
    return hashlib.sha256(address.encode()).hexdigest()[:length]


# Resource types whose `id` is an EC2-style identifier.
_ID_PREFIX = {
    "aws_security_group": "sg-",
    "aws_default_security_group": "sg-",
    "aws_subnet": "subnet-",
    "aws_default_subnet": "subnet-",
    "aws_vpc": "vpc-",
    "aws_default_vpc": "vpc-",
    "aws_internet_gateway": "igw-",
    "aws_nat_gateway": "nat-",
    "aws_route_table": "rtb-",
    "aws_eip": "eipalloc-",
    "aws_launch_template": "lt-",
    "aws_instance": "i-",
    "aws_network_interface": "eni-",
    "aws_vpc_endpoint": "vpce-",
    "aws_efs_file_system": "fs-",
    "aws_ami": "ami-",
    "aws_key_pair": "key-",
}

# ARN templates: {region}, {account}, {name}, {id}.
_ARNS = {
    "aws_iam_role": "arn:aws:iam::{account}:role/{name}",
    "aws_iam_instance_profile": "arn:aws:iam::{account}:instance-profile/{name}",
    "aws_iam_policy": "arn:aws:iam::{account}:policy/{name}",
    "aws_iam_user": "arn:aws:iam::{account}:user/{name}",
    "aws_iam_group": "arn:aws:iam::{account}:group/{name}",
    "aws_iam_service_linked_role": "arn:aws:iam::{account}:role/aws-service-role/{name}",
    "aws_s3_bucket": "arn:aws:s3:::{name}",
    "aws_cloudwatch_log_group": "arn:aws:logs:{region}:{account}:log-group:{name}",
    "aws_ecr_repository": "arn:aws:ecr:{region}:{account}:repository/{name}",
    "aws_sns_topic": "arn:aws:sns:{region}:{account}:{name}",
    "aws_sqs_queue": "arn:aws:sqs:{region}:{account}:{name}",
    "aws_lambda_function": "arn:aws:lambda:{region}:{account}:function:{name}",
    "aws_dynamodb_table": "arn:aws:dynamodb:{region}:{account}:table/{name}",
    "aws_sfn_state_machine": "arn:aws:states:{region}:{account}:stateMachine:{name}",
    "aws_secretsmanager_secret": "arn:aws:secretsmanager:{region}:{account}:secret:{name}",
    "aws_kms_key": "arn:aws:kms:{region}:{account}:key/{id}",
    "aws_efs_file_system": "arn:aws:elasticfilesystem:{region}:{account}:file-system/{id}",
}

# Types whose `id` is their name (as the AWS provider has it).
_ID_IS_NAME = (
    "aws_iam_role",
    "aws_iam_instance_profile",
    "aws_iam_user",
    "aws_iam_group",
    "aws_s3_bucket",
    "aws_cloudwatch_log_group",
    "aws_ecr_repository",
    "aws_dynamodb_table",
)


def _name(type_: str, label: str, address: str, args: Mapping[str, Any]) -> str:
    for key in ("name", "bucket", "function_name", "repository_name", "role_name"):
        if key in args and isinstance(args[key], str):
            return str(args[key])
    for key in ("name_prefix", "bucket_prefix"):
        if key in args and isinstance(args[key], str):
            return f"{args[key]}{hex_id(address, 10)}"
    return f"{label.replace('_', '-')}-{hex_id(address, 8)}"


def _id(type_: str, label: str, address: str, args: Mapping[str, Any]) -> str:
    prefix = _ID_PREFIX.get(type_)
    if prefix is not None:
        return prefix + hex_id(address)
    if type_ in _ID_IS_NAME:
        return _name(type_, label, address, args)
    return hex_id(address, 20)


def _arn(env: Environment, type_: str, label: str, address: str, args: Mapping[str, Any]) -> str:
    values = {
        "region": env.region,
        "account": env.account,
        "name": _name(type_, label, address, args),
        "id": _id(type_, label, address, args),
    }
    template = _ARNS.get(type_)
    if template is None:
        # aws_<service>_<kind...>: arn:aws:<service>:<region>:<account>:<kind>/<name>
        parts = type_.split("_")
        service = parts[1] if len(parts) > 1 else type_
        kind = "-".join(parts[2:]) or service
        template = f"arn:aws:{service}:{{region}}:{{account}}:{kind}/{{name}}"
    return template.format(**values)


def _random(type_: str, address: str, args: Mapping[str, Any], attr: str) -> Any:
    """random_* resources: values derived from the address, the same on every apply."""
    raw = digest(address)
    if type_ == "random_id":
        size = int(args.get("byte_length", 8))
        data = (raw * (size // len(raw) + 1))[:size]
        prefix = str(args.get("prefix") or "")
        b64_url = base64.urlsafe_b64encode(data).decode().rstrip("=")
        values = {
            "hex": prefix + data.hex(),
            "b64_url": prefix + b64_url,
            "b64_std": prefix + base64.b64encode(data).decode(),
            "dec": prefix + str(int.from_bytes(data, "big")),
            "id": b64_url,
        }
        return values.get(attr)
    if type_ in ("random_string", "random_password"):
        length = int(args.get("length", 16))
        alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
        text = "".join(alphabet[b % len(alphabet)] for b in (raw * 4)[:length])
        return text if attr in ("result", "id") else None
    if type_ == "random_uuid":
        return str(uuid.UUID(bytes=raw[:16], version=4)) if attr in ("result", "id") else None
    if type_ == "random_integer":
        low, high = int(args.get("min", 0)), int(args.get("max", 100))
        value = low + int.from_bytes(raw[:8], "big") % (high - low + 1)
        return value if attr == "result" else str(value) if attr == "id" else None
    if type_ == "random_pet":
        words = ["brave", "calm", "eager", "fond", "keen", "quick", "sunny", "witty"]
        pets = ["otter", "heron", "lynx", "marten", "puffin", "seal", "tern", "wren"]
        sep = str(args.get("separator", "-"))
        parts = [words[raw[0] % 8], pets[raw[1] % 8]]
        if args.get("prefix"):
            parts.insert(0, str(args["prefix"]))
        return sep.join(parts) if attr == "id" else None
    if type_ == "random_shuffle":
        return list(args.get("input", [])) if attr == "result" else None
    return None


def resource_attribute(
    env: Environment, type_: str, label: str, address: str, args: Mapping[str, Any], attr: str
) -> Any:
    """The attribute `attr` of a resource shoal does not create."""
    if type_.startswith("random_"):
        value = _random(type_, address, args, attr)
        if value is not None:
            return value
    if type_ == "aws_ecr_repository" and attr == "repository_url":
        name = _name(type_, label, address, args)
        return env.repository_urls.get(address, env.repository_urls.get(name, name))
    if type_ == "aws_ecr_repository" and attr == "registry_id":
        return env.account
    if attr in args:
        return args[attr]
    if attr == "id":
        return _id(type_, label, address, args)
    if attr == "arn":
        return _arn(env, type_, label, address, args)
    if attr in ("name", "bucket"):
        return _name(type_, label, address, args)
    if type_ == "aws_sqs_queue" and attr == "url":
        name = _name(type_, label, address, args)
        return f"https://sqs.{env.region}.amazonaws.com/{env.account}/{name}"
    if attr.endswith("_arn"):
        return _arn(env, type_, label, f"{address}.{attr}", args)
    return f"{label.replace('_', '-')}-{attr.replace('_', '-')}"


def data_attribute(
    env: Environment, type_: str, label: str, address: str, args: Mapping[str, Any], attr: str
) -> Any:
    """The attribute `attr` of a data source: what AWS would answer, made up."""
    azs = [f"{env.region}{z}" for z in "abc"]
    known: dict[str, dict[str, Any]] = {
        "aws_caller_identity": {
            "account_id": env.account,
            "id": env.account,
            "arn": f"arn:aws:iam::{env.account}:user/shoal",
            "user_id": "AIDA" + hex_id(address, 16).upper(),
        },
        "aws_region": {"name": env.region, "id": env.region, "region": env.region},
        "aws_partition": {"partition": "aws", "dns_suffix": "amazonaws.com", "id": "aws"},
        "aws_availability_zones": {
            "names": azs,
            "zone_ids": [f"use1-az{i}" for i in (1, 2, 3)],
            "id": env.region,
        },
        "aws_iam_policy_document": {
            "json": '{"Version":"2012-10-17","Statement":[]}',
            "id": hex_id(address, 10),
        },
        "aws_subnets": {"ids": [f"subnet-{hex_id(f'{address}[{i}]')}" for i in range(2)]},
        "aws_security_groups": {"ids": [f"sg-{hex_id(address)}"]},
        "aws_vpc": {"cidr_block": "10.0.0.0/16"},
    }
    table = known.get(type_, {})
    if attr in table:
        return table[attr]
    if type_.startswith("aws_batch_") and attr == "arn":
        kind = type_.removeprefix("aws_batch_").replace("_", "-")
        name = _name(type_, label, address, args)
        return f"arn:aws:batch:{env.region}:{env.account}:{kind}/{name}"
    return resource_attribute(env, type_, label, address, args, attr)


# Module outputs named like these are lists of ids, one per input entry.
_LIST_OUTPUTS = ("subnets", "_subnets", "_ids", "subnet_ids", "_route_table_ids")
_OUTPUT_PREFIX = {
    "vpc_id": "vpc-",
    "default_security_group_id": "sg-",
    "security_group_id": "sg-",
    "igw_id": "igw-",
    "default_route_table_id": "rtb-",
    "default_network_acl_id": "acl-",
}


def module_output(env: Environment, name: str, args: Mapping[str, Any], output: str) -> Any:
    """Output `output` of module `name` (not run): ids shaped like the VPC
    module's (`vpc_id`, `private_subnets`, ...), else its input of that name."""
    address = f"module.{name}.{output}"
    if output.endswith("_cidr_blocks"):
        source = output.removesuffix("_cidr_blocks")
        if source in args:
            return args[source]
    if output == "azs":
        return args.get("azs", [f"{env.region}a", f"{env.region}b"])
    if output.endswith(_LIST_OUTPUTS) and output != "vpc_id":
        given = args.get(output)
        count = len(given) if isinstance(given, list) and given else 0
        if not count:
            azs = args.get("azs")
            count = len(azs) if isinstance(azs, list) and azs else 2
        prefix = "subnet-" if "subnet" in output else "rtb-" if "route_table" in output else ""
        return [f"{prefix}{hex_id(f'{address}[{i}]')}" for i in range(count)]
    if output in _OUTPUT_PREFIX:
        return _OUTPUT_PREFIX[output] + hex_id(address)
    if output.endswith("_arn"):
        kind = output.removesuffix("_arn").replace("_", "-")
        return f"arn:aws:ec2:{env.region}:{env.account}:{kind}/{hex_id(address)}"
    if output.endswith("_id"):
        return hex_id(address)
    if output in args:
        return args[output]
    return f"{name}-{output.replace('_', '-')}"
