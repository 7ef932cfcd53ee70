"""The local secret store: `containerProperties.secrets` resolved on this host.

A job definition names secrets as AWS does (`{"name": "DB_PASSWORD",
"valueFrom": "arn:aws:secretsmanager:...:secret:db-password-AbCdEf"}` or an
SSM parameter ARN, or a plain name); the engine looks the value up here when
it launches an attempt and puts it in the job's environment only. Values are
never stored with the job, so DescribeJobs, logs written by shoal, the
dashboard and the metrics cannot show them.

Each secret is a file (mode 0600) in a directory (0700) of the data
directory, written atomically; `shoal secrets put NAME` fills it.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from urllib.parse import quote, unquote

import orjson

NAME = re.compile(r"^[A-Za-z0-9/_+=.@-]{1,512}$")
_SECRETS_MANAGER = re.compile(r"^arn:[^:]+:secretsmanager:[^:]*:[^:]*:secret:(?P<rest>.+)$")
_SSM = re.compile(r"^arn:[^:]+:ssm:[^:]*:[^:]*:parameter(?P<name>/.+)$")
_RANDOM_SUFFIX = re.compile(r"-[A-Za-z0-9]{6}$")  # what Secrets Manager adds to ARNs


class SecretStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, name: str) -> Path:
        if not NAME.match(name):
            raise ValueError(
                f"secret name {name!r} is not valid: 1 to 512 of letters, digits and /_+=.@-"
            )
        return self.root / quote(name, safe="")

    def put(self, name: str, value: str) -> None:
        path = self._path(name)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value)
        os.replace(tmp, path)

    def get(self, name: str) -> str | None:
        try:
            return self._path(name).read_text()
        except (OSError, ValueError):
            return None

    def delete(self, name: str) -> bool:
        with contextlib.suppress(FileNotFoundError):
            self._path(name).unlink()
            return True
        return False

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(unquote(p.name) for p in self.root.iterdir() if not p.name.endswith(".tmp"))

    def resolve(self, value_from: str) -> str | None:
        """The value a `valueFrom` names: a Secrets Manager ARN (with its
        random suffix or not, and an optional JSON key), an SSM parameter ARN,
        or a plain name. None when there is no such secret (or key)."""
        m = _SECRETS_MANAGER.match(value_from)
        if m is not None:
            name, _, rest = m["rest"].partition(":")
            json_key = rest.split(":", 1)[0] if rest else ""
            value = self.get(name)
            if value is None and _RANDOM_SUFFIX.search(name):
                value = self.get(_RANDOM_SUFFIX.sub("", name))
            if value is None or not json_key:
                return value
            try:
                doc = orjson.loads(value)
            except orjson.JSONDecodeError:
                return None
            found = doc.get(json_key) if isinstance(doc, dict) else None
            return None if found is None else str(found)
        m = _SSM.match(value_from)
        if m is not None:
            return self.get(m["name"]) or self.get(m["name"].lstrip("/"))
        return self.get(value_from)
