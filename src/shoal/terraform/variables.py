"""Variable values: defaults, terraform.tfvars, TF_VAR_name and --var.

Precedence is Terraform's (later wins): the default, then terraform.tfvars
and *.auto.tfvars, then the TF_VAR_name environment variable, then --var.
A value given as text (environment, command line) is taken as it is for a
string variable and parsed as an HCL expression for any other type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from shoal.terraform.errors import ApplyError, EvalError
from shoal.terraform.expressions import evaluate, to_bool, to_number, to_str
from shoal.terraform.functions import FUNCTIONS
from shoal.terraform.hcl import Block, Configuration
from shoal.terraform.parser import parse_expression, parse_value


def _type_name(block: Block) -> str | None:
    raw = block.body.get("type")
    if not isinstance(raw, str):
        return None
    return raw.removeprefix("${").removesuffix("}").strip()


class _NoNames:
    """The scope of variable values: literals and functions only."""

    def root(self, name: str) -> Any:
        raise EvalError(f"a variable value cannot refer to {name}")

    def function(self, name: str) -> Callable[..., Any] | None:
        return FUNCTIONS.get(name)


def _convert(value: Any, type_name: str | None) -> Any:
    if value is None or type_name is None:
        return value
    if type_name == "number":
        return to_number(value)
    if type_name == "bool":
        return to_bool(value)
    if type_name == "string":
        return to_str(value)
    return value


def resolve_variables(
    config: Configuration, given: Mapping[str, str], environ: Mapping[str, str]
) -> dict[str, Any]:
    """Each declared variable's value: its default, then terraform.tfvars /
    *.auto.tfvars, then TF_VAR_name, then --var (the last one given wins)."""
    declared = {b.labels[0]: b for b in config.of_kind("variable")}
    for name in given:
        if name not in declared:
            raise ApplyError(
                f"--var {name}: no variable {name!r} is declared in {config.directory}"
            )
    values: dict[str, Any] = {}
    for name, block in declared.items():
        type_name = _type_name(block)
        try:
            if name in given or f"TF_VAR_{name}" in environ:
                text = given[name] if name in given else environ[f"TF_VAR_{name}"]
                # As Terraform: a string variable takes the text as it is,
                # any other type parses it as an HCL expression.
                value: Any = text
                if type_name not in (None, "string"):
                    value = evaluate(parse_expression(text), _NoNames())
            elif name in config.tfvars:
                value = evaluate(parse_value(config.tfvars[name]), _NoNames())
            elif "default" in block.body:
                value = evaluate(parse_value(block.body["default"]), _NoNames())
            else:
                raise block.where.error(
                    f"variable {name!r} has no value: give --var {name}=VALUE or set TF_VAR_{name}"
                )
            values[name] = _convert(value, type_name)
        except EvalError as e:
            raise block.where.error(f"variable {name!r}: {e.message}") from None
    return values
