"""`Ref::name` substitution in a job's command.

AWS documents whole-element placeholders (`"Ref::inputfile"`); placeholders
inside a longer string are substituted too (`"--in=Ref::inputfile"`), as
moto and LocalStack do and as users expect. Only the command is touched.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from shoal.domain.errors import InvalidRequest

_REF = re.compile(r"Ref::([A-Za-z0-9_]+)")


def substitute(command: Sequence[str], parameters: Mapping[str, str]) -> list[str]:
    """The command with every placeholder replaced; an unknown one is an error."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in parameters:
            raise InvalidRequest(
                f"Unable to substitute value. No parameter found for reference {name}"
            )
        return parameters[name]

    return [_REF.sub(replace, part) if "Ref::" in part else part for part in command]
