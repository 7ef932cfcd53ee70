"""What the dashboard hides: values of names that look secret.

A job's environment, parameters and tags are shown by name; the value is
replaced when the name looks like it holds a credential, and a password
inside a URL (`scheme://user:password@host`) is hidden wherever it appears.
`secrets` entries (valueFrom references) are never shown beyond their name.
Hidden values are also scrubbed from the command, which Ref:: substitution
may have filled with a secret parameter.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

HIDDEN = "•••••• (hidden)"

_SECRET_NAME = re.compile(
    r"secret|passw|passphrase|pwd|token|api[-_]?key|apikey|access[-_]?key|private|"
    r"credential|auth|session|cookie|signature|cert|salt|dsn|conn(ection)?[-_]?str|"
    r"(^|[-_])(key|pass|pw)$",
    re.IGNORECASE,
)
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@", re.IGNORECASE)


def secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def scrub_url(value: str) -> str:
    return _URL_PASSWORD.sub(lambda m: m.group("head") + "••••••@", value)


class Redactor:
    """Decides what to show of one job's values, remembering what it hid."""

    def __init__(self) -> None:
        self._hidden: set[str] = set()

    def value(self, name: str, value: object) -> str:
        text = "" if value is None else str(value)
        if secret_name(name):
            if text:
                self._hidden.add(text)
            return HIDDEN
        scrubbed = scrub_url(text)
        if scrubbed != text:
            self._hidden.add(text)
        return scrubbed

    def learn(self, pairs: Iterable[tuple[str, object]]) -> None:
        """Note the values that `value` would hide, without showing them."""
        for name, value in pairs:
            self.value(name, value)

    def free_text(self, text: str) -> str:
        """`text` with every value hidden so far (4 characters or more) taken out."""
        text = scrub_url(text)
        for secret in sorted(self._hidden, key=len, reverse=True):
            if len(secret) >= 4:
                text = text.replace(secret, HIDDEN)
        return text
