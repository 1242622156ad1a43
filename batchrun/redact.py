"""Credentials in URIs are masked wherever batchrun stores or prints text.

A cluster address such as `ray://user:secret@host:10001?token=abc` is used as given, but
what reaches the catalog (run config and messages), the run logs and the CLI's output is
`ray://user:***@host:10001?token=***`. One function, applied at those few boundaries:
`runner` (the stored config's address, staging dir and source paths), `execute`/`runner`
(stored run messages), `ray_session` (its error texts), `logs` (the log sink) and `cli`
(error lines).
"""

from __future__ import annotations

import re

MASK = "***"

_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<info>\S*)@")
"""scheme://USERINFO@: up to the last '@' of the whitespace-free token, so a user name with
an '@' (alice@corp.com) or a password with '/', '#', '?' or quotes is covered. Everything
after the first ':' of it is the password. This may mask more than a password (a port
when a later '@' sits in the path), never less."""

SECRET_KEYS = ("token", "secret", "key", "password", "passwd", "pwd", "sig", "signature",
               "credential", "auth")
"""A query-string parameter whose name contains one of these words has its value masked
(access_token, api_key, X-Amz-Signature, X-Amz-Credential, sig, ...)."""

_QUERY = re.compile(
    r"(?P<head>[?&;](?P<name>[^\s=&;#?'\"<>]*)=(?P<quote>['\"]?))(?P<secret>[^\s&;#'\"<>]*)")


def redact(text: str) -> str:
    """`text` with URI passwords and secret query-string values replaced by `MASK`."""
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(_masked_userinfo, text)
    return _QUERY.sub(_masked_parameter, text)


def _masked_userinfo(match: re.Match[str]) -> str:
    user, colon, _ = match["info"].partition(":")
    return f"{match['head']}{user}:{MASK}@" if colon else match[0]


def _masked_parameter(match: re.Match[str]) -> str:
    name = match["name"].lower()
    if any(word in name for word in SECRET_KEYS) and match["secret"]:
        return f"{match['head']}{MASK}"
    return match[0]


def redact_message(message: str | None) -> str | None:
    return None if message is None else redact(message)
