"""The one place that strips secrets from URLs.

Every URL that reaches a log line, a label, the landing page, an error body
or `check-config` output goes through `redact_url` first.
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit, urlunsplit

# Query parameters whose values look like credentials.
_SECRET_PARAM = re.compile(
    r"(pass|pwd|secret|token|key|auth|sig|signature|credential|session)", re.IGNORECASE
)


def _strip_userinfo(parts: SplitResult) -> str:
    netloc = parts.netloc.rpartition("@")[2]
    return netloc


def redact_url(url: str, *, drop_query: bool = False) -> str:
    """Remove user info and secret-looking query values from `url`.

    With `drop_query` the whole query string (and fragment) goes, which is
    what labels want: query strings are unbounded and often carry tokens.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    netloc = _strip_userinfo(parts)
    if drop_query:
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, "REDACTED" if _SECRET_PARAM.search(k) else v) for k, v in pairs], safe="/:"
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str, secrets: list[str] | tuple[str, ...]) -> str:
    """Blank out known secret values wherever they appear in free text."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "REDACTED")
    return text
