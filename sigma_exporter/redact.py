"""The one place that strips secrets from URLs.

Every URL that reaches a log line, a label, the landing page, an error body
or `check-config` output goes through `redact_url` first. `redact_text`
does the same to every URL inside free text (error messages of libraries),
blanks known secret values and anything shaped like a Sigma licence key;
`RedactFilter` applies it to every log line as a last line of defence.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit, urlunsplit

# Query parameters whose values look like credentials.
_SECRET_PARAM = re.compile(
    r"(pass|pwd|secret|token|key|auth|sig|signature|credential|session)", re.IGNORECASE
)


# A URL inside free text: scheme://... up to whitespace or a quote.
_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]{1,15}://[^\s'\"<>`]+")


# A Sigma licence key as the documented dump shows one (`nats.license`:
# `Y7KI4-HHQX5-0N9QN-X8TLN-VOPE7`). The parser never reads the key, so the
# exporter cannot know its value; a server's error message (`msg`) or any
# other text may still echo it, and this shape is blanked wherever it appears.
_LICENCE_KEY = re.compile(r"(?<![A-Za-z0-9])[A-Za-z0-9]{5}(?:-[A-Za-z0-9]{5}){4,}(?![A-Za-z0-9])")


# User info at the start of a URL with `scheme://` or without any scheme
# (`user:pw@host/live` reads as scheme `user` to urlsplit, keeping the password).
_LEADING_USERINFO = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.\-]*:/+)?([^/?#]*@)")
# Schemes whose path ends in a stream key, a credential in all but name.
_STREAM_KEY_SCHEMES = frozenset({"rtmp", "rtmps", "rtmpe", "rtmpt", "rtmpte", "rtmpts"})


def _strip_userinfo(parts: SplitResult) -> str:
    netloc = parts.netloc.rpartition("@")[2]
    return netloc


def _redact_path(scheme: str, path: str) -> str:
    """Blank `name=value` path tokens with a secret-looking name, and RTMP stream keys."""
    if "=" in path:
        pieces = re.split(r"([/;])", path)  # keep the separators
        for i, piece in enumerate(pieces):
            name, sep, _ = piece.partition("=")
            if sep and _SECRET_PARAM.search(name):
                pieces[i] = f"{name}=REDACTED"
        path = "".join(pieces)
    if scheme.lower() in _STREAM_KEY_SCHEMES:
        app, sep, key = path.lstrip("/").partition("/")
        if key:  # rtmp://host/app/STREAM-KEY: the app stays, the key goes
            path = f"/{app}{sep}REDACTED"
    return path


def redact_url(url: str, *, drop_query: bool = False) -> str:
    """Remove user info and secret-looking query values from `url`.

    With `drop_query` the whole query string (and fragment) goes, which is
    what labels want: query strings are unbounded and often carry tokens.
    """
    # Backslashes act as slashes for many clients (and for WHATWG URL parsers):
    # `rtmp:\\user:pw@host\live` must lose its user info too.
    url = url.replace("\\", "/")
    match = _LEADING_USERINFO.match(url)
    if match is not None:
        url = url[:match.start(1)] + url[match.end(1):]
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    netloc = _strip_userinfo(parts)
    path = _redact_path(parts.scheme, parts.path)
    if drop_query:
        return urlunsplit((parts.scheme, netloc, path, "", ""))
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, "REDACTED" if _SECRET_PARAM.search(k) else v) for k, v in pairs], safe="/:"
        )
    # A fragment never reaches the server and often carries a token (OAuth).
    fragment = "REDACTED" if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, path, query, fragment))


def redact_text(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """Redact every URL in `text`, anything shaped like a licence key, and known
    secret values."""
    if "://" in text:
        text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    if "-" in text:
        text = _LICENCE_KEY.sub("REDACTED", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "REDACTED")
    return text


class RedactFilter(logging.Filter):
    """Rewrites each log record's message, traceback and text fields through `redact_text`."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info:  # the formatters print a ready `exc_text` as the traceback
            record.exc_text = redact_text(
                logging.Formatter().formatException(record.exc_info), self.secrets)
            record.exc_info = None
        record.msg = redact_text(message, self.secrets)
        record.args = ()
        found = getattr(record, "fields", None)
        if isinstance(found, dict):  # logsetup.fields(): a URL or a secret may be a value
            record.fields = {k: redact_text(v, self.secrets) if isinstance(v, str) else v
                             for k, v in found.items()}
        return True


def install_log_filter(secrets: tuple[str, ...] = ()) -> RedactFilter:
    """Put a `RedactFilter` on every handler of the root logger."""
    redactor = RedactFilter(secrets)
    for handler in logging.getLogger().handlers:
        handler.addFilter(redactor)
    return redactor
