"""Reading a ``shared_state`` URL: ``redis://[[user]:password@]host[:port][/db][?options]``.

``rediss://`` is the same over TLS (certificate verified against the system's
trust store, or ``?ca=/path/to/ca.pem``). Options: ``prefix`` (the key
namespace, default ``llmlb``: several fleets may share one Redis), ``timeout``
(seconds one round trip may take before the balancer falls back to its local
share, default 1), ``heartbeat`` (seconds between heartbeats, default 1),
``guard`` (seconds added to the 1-second request window, default 0.02).

Every error message shows the URL with its password replaced by ``***``.
Strictly private.
"""

from __future__ import annotations

import math
import re
from urllib.parse import parse_qs, unquote, urlsplit

import msgspec

__all__ = ["SharedStateURL", "parse_shared_state", "redact_url"]

#: As ``.._secrets.REDACTED`` (not imported: the config module imports this one, and the
#: secrets module names the config's types).
REDACTED = "***"

_PREFIX = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
_OPTIONS = frozenset({"prefix", "timeout", "heartbeat", "ca", "guard"})


class SharedStateURL(msgspec.Struct, frozen=True, kw_only=True):
    """A parsed ``shared_state`` URL. ``password`` is never shown (see `display`)."""

    tls: bool
    host: str
    port: int
    db: int
    username: str | None
    password: str | None = msgspec.field(default=None)
    prefix: str = "llmlb"
    timeout: float = 1.0
    heartbeat: float = 1.0
    guard: float | None = None
    """Extra seconds on the 1-second request window (default: the store's, 20 ms): more
    when admission round trips are slow, so requests still land in windows apart."""
    ca: str | None = None
    display: str = ""
    """The URL as it may be shown: the password replaced by ``***``."""

    def __repr__(self) -> str:
        return f"SharedStateURL({self.display!r})"

    __str__ = __repr__


def redact_url(url: str) -> str:
    """``url`` with the password of its user-info replaced by ``***`` (best effort)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url if "@" not in url else REDACTED
    netloc, slash, tail = rest.partition("/")
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:{REDACTED}@{hostport}" if colon else f"{REDACTED}@{hostport}"
    return f"{scheme}://{netloc}{slash}{tail}"


def _positive(name: str, raw: str, display: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0 or value > 3600:
        raise ValueError(
            f"shared_state {display}: {name} must be seconds in (0, 3600], got {raw!r}"
        )
    return value


def parse_shared_state(url: str) -> SharedStateURL:
    """Parse and check a ``shared_state`` URL; `ValueError` (password redacted) when malformed."""
    if not isinstance(url, str):
        raise ValueError(f"shared_state must be a redis:// URL string, got {type(url).__name__}")
    display = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"shared_state {display}: malformed URL ({_clean(exc, url)})") from None
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(
            f"shared_state {display}: the scheme must be redis:// or rediss://, "
            f"got {parts.scheme + '://' if parts.scheme else 'none'}"
        )
    host = parts.hostname
    if not host:
        raise ValueError(f"shared_state {display}: no host")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(
            f"shared_state {display}: the path must be a database number, got {path!r}"
        )
    db = int(path) if path else 0
    try:
        options = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise ValueError(f"shared_state {display}: malformed query string") from None
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise ValueError(
            f"shared_state {display}: unknown option {unknown[0]!r} "
            f"(known: {', '.join(sorted(_OPTIONS))})"
        )
    one = {key: values[-1] for key, values in options.items()}
    prefix = one.get("prefix", "llmlb")
    if not _PREFIX.match(prefix):
        raise ValueError(
            f"shared_state {display}: prefix must be 1-64 characters of letters, digits and "
            f"_.:- , got {prefix!r}"
        )
    timeout = _positive("timeout", one["timeout"], display) if "timeout" in one else 1.0
    heartbeat = _positive("heartbeat", one["heartbeat"], display) if "heartbeat" in one else 1.0
    guard = None
    if "guard" in one:
        guard = _positive("guard", one["guard"], display)
        if guard >= 1.0:
            raise ValueError(f"shared_state {display}: guard must be below 1 s, got {guard:g}")
    ca = one.get("ca") or None
    if ca is not None and parts.scheme != "rediss":
        raise ValueError(f"shared_state {display}: ca= needs rediss:// (TLS)")
    return SharedStateURL(
        tls=parts.scheme == "rediss",
        host=host,
        port=port or 6379,
        db=db,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        prefix=prefix,
        timeout=timeout,
        heartbeat=heartbeat,
        guard=guard,
        ca=ca,
        display=display,
    )


def _clean(exc: Exception, url: str) -> str:
    text = str(exc)
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    return text.replace(password, REDACTED) if password else text
