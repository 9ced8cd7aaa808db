"""Secrets kept out of the server's log lines: sign-in link tokens and ``token=``-like values.

uvicorn writes every request's path and query string to its access log (``uvicorn.access``)
and every websocket handshake's to ``uvicorn.error``. A first sign-in link
(``/signin/link/<token>``) is single-use and expires, but until then its token is a
password: whoever reads the log could set the account's password. :class:`SecretRedaction`
replaces such values with ``[redacted]`` in a record's arguments before any handler formats
it; :func:`install` puts it on uvicorn's loggers (``polku serve`` and
``uvicorn --factory web.server:app_factory`` both call it, after uvicorn has configured its
logging).
"""

from __future__ import annotations

import logging
import re
from typing import Final

__all__ = ("REDACTED", "SecretRedaction", "install", "redact")

REDACTED: Final = "[redacted]"
#: The loggers that carry request paths: uvicorn's access log and its websocket lines.
LOGGERS: Final = ("uvicorn.access", "uvicorn.error")

_LINK_TOKEN = re.compile(r"(/signin/link/)[^/?#\s\"]+")
#: A query parameter whose name says it holds a secret: it contains token, secret or passw
#: (``token``, ``access_token``, ``password``), or is, or ends in ``_``/``-``/``.`` and, key,
#: code, sig, signature or auth (``api_key``, ``code``). Its value goes, its name stays.
_NAME: Final = r"[^=&;#\s\"]*"
_SECRET_PARAMETER = re.compile(
    rf"([?&;](?:{_NAME}(?:token|secret|passw){_NAME}|(?:{_NAME}[_.-])?(?:key|code|sig|signature|auth))=)[^&;#\s\"]*",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with every sign-in link token and secret-looking query value replaced."""
    if "=" not in text and "/signin/link/" not in text:  # the usual line: nothing either pattern could match
        return text
    text = _LINK_TOKEN.sub(rf"\1{REDACTED}", text)
    return _SECRET_PARAMETER.sub(rf"\1{REDACTED}", text)


class SecretRedaction(logging.Filter):
    """Rewrites the string arguments (and an argument-free message) of every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        elif not record.args and isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def install() -> None:
    """Put one :class:`SecretRedaction` on each of uvicorn's loggers (again: no second one)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, SecretRedaction) for existing in logger.filters):
            logger.addFilter(SecretRedaction())
