"""Secrets never leave the process: the one redaction function, and the types that hold secrets.

``redact`` is applied to every text that may be shown (messages, ``validate``, ``--json``,
Dagster metadata). It finds URLs anywhere in the text and renders them through SQLAlchemy's own
URL rendering with the password hidden, masks query parameters whose name says they are secret
(``?password=…`` is used by libpq), and masks ``key=value`` pairs of such names in libpq-style
DSN text and ``'key': 'value'`` pairs in the text of a mapping.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import SecretStr

MASK = "***"
# Names of settings, query parameters and DSN keys that hold a secret (matched as a suffix of
# the name, case-insensitively: ``sasl.password``, ``ssl.key.password``, ``PGPASSWORD``).
_SECRET_NAME = r"[\w.\-]*(?:password|passwd|pwd|secret|token|api[_\-]?key|sslkey|key\.pem)"
_SECRET_NAME_RE = re.compile(rf"^{_SECRET_NAME}$", re.IGNORECASE)
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")
_URL_TRAILER = ".,;:)]}"
_USERINFO = re.compile(r"(://[^/@\s:]*:)[^@\s/]*@")
_USERINFO_GREEDY = re.compile(r"(://[^/@\s:]*:)[^/\s]*@")
# ``user:secret@host`` without a scheme (a URL missing its ``scheme://``).
_BARE_USERINFO = re.compile(r"(?<![\w.%\-])([\w.%\-]*:)[^@\s/:'\"]+@(?=[\w\[])")
_PAIR = re.compile(
    rf"(?i)(?<![\w.\-])({_SECRET_NAME})(\s*=\s*)('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s&;,'\")]+)"
)
_QUOTED_PAIR = re.compile(rf"(?i)(['\"])({_SECRET_NAME})\1(\s*:\s*)(['\"])(?:(?!\4).)*\4")


def is_secret_name(name: str) -> bool:
    """Does a setting's name say that its value is a secret (password, secret, token, key.pem)?"""
    return bool(_SECRET_NAME_RE.match(name.strip())) or "sasl.oauthbearer.config" in name


def redact(text: str) -> str:
    """``text`` with every password, secret query parameter and secret ``key=value`` masked.

    ``postgresql://etl:pw@db/w?password=pw`` -> ``postgresql://etl:***@db/w?password=***``;
    ``host=db password=pw`` -> ``host=db password=***``.
    """
    text = _URL.sub(_redact_url_match, str(text))
    text = _BARE_USERINFO.sub(rf"\1{MASK}@", text)
    text = _PAIR.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    return _QUOTED_PAIR.sub(
        lambda m: f"{m.group(1)}{m.group(2)}{m.group(1)}{m.group(3)}'***'", text
    )


def _redact_url_match(match: re.Match[str]) -> str:
    url = match.group(0)
    stripped = url.rstrip(_URL_TRAILER)  # the sentence's punctuation, not the URL's
    return _redact_url(stripped) + url[len(stripped) :]


def _redact_url(url: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    netloc = url.split("://", 1)[1].split("/", 1)[0]
    if netloc.count("@") > 1:  # an unquoted "@" in the password: hide up to the last one
        return _USERINFO_GREEDY.sub(rf"\1{MASK}@", url, count=1)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # not a URL SQLAlchemy reads: mask userinfo by hand
        return _USERINFO.sub(rf"\1{MASK}@", url)
    secret_keys = [k for k in parsed.query if is_secret_name(k)]
    if parsed.password is None and not secret_keys:
        return url
    if secret_keys:
        parsed = parsed.update_query_dict(dict.fromkeys(secret_keys, MASK))
    rendered = parsed.render_as_string(hide_password=True)
    return rendered.replace("%2A%2A%2A", MASK)


class SecretUrl(SecretStr):
    """A connection URL that shows with its password and secret parameters masked.

    ``repr`` and ``str`` show ``redact(url)``, pydantic's dumps ``SecretStr``'s asterisks; the
    sinks and clients take ``get_secret_value()``.
    """

    def _display(self) -> str:
        return redact(self.get_secret_value())


def reveal(value: Any) -> Any:
    """The plain value of a ``SecretStr`` (anything else unchanged), for the client libraries."""
    return value.get_secret_value() if isinstance(value, SecretStr) else value
