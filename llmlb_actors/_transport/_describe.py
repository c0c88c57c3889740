"""Words for what broke: the one place a low-level failure becomes a message a person knows.

Both transports describe failures here, from the innermost cause they can
find: httpx wraps the real error two or three levels down (``httpx.ConnectError``
from ``httpcore.ConnectError`` from ``trio.BrokenResourceError`` from
``ssl.SSLCertVerificationError``), and trio reports a failed connect as an
``OSError`` whose cause is an ``ExceptionGroup`` with one error per address.
`describe` walks causes, contexts and groups and names each distinct leaf:
``connection refused``, ``connection reset by peer``, ``DNS: name not found:
api.example.com``, ``TLS: certificate verify failed: unable to get local issuer
certificate for api.example.com``. Messages name the host, never a path or
query (they may carry a key). Strictly private.
"""

from __future__ import annotations

import errno
import re
import socket
import ssl

import trio

__all__ = ["describe", "is_certificate_failure", "timed_out"]

_SSL_TEXT = re.compile(r"^\[[^\]]*\]\s*(?P<text>.*?)(?:\s*\(_ssl\.c:\d+\))?$")
_NOT_FOUND = frozenset(
    code
    for code in (getattr(socket, "EAI_NONAME", None), getattr(socket, "EAI_NODATA", None))
    if code is not None
)
_ERRNO_WORDS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset by peer",
    errno.ECONNABORTED: "connection aborted",
    errno.EPIPE: "connection closed by peer (broken pipe)",
    errno.ETIMEDOUT: "connection timed out (no answer from the host)",
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTUNREACH: "host unreachable",
}


def _children(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return list(exc.exceptions)
    # The context too when a wrapper suppressed it (httpcore raises its errors
    # ``from None``): here we want the root cause, not a tidy traceback.
    nested = exc.__cause__ or exc.__context__
    return [] if nested is None else [nested]


def _known(exc: BaseException) -> bool:
    """A failure `_words` can name better than its wrappers can."""
    return isinstance(exc, OSError) or type(exc).__module__.startswith(("h11", "httptools"))


def _leaves(exc: BaseException, seen: set[int]) -> list[BaseException]:
    """The innermost known failures under ``exc`` (``exc`` itself when none is deeper)."""
    seen.add(id(exc))
    found: list[BaseException] = []
    for child in _children(exc):
        if id(child) not in seen:
            found += _leaves(child, seen)
    if any(_known(leaf) for leaf in found):
        return [leaf for leaf in found if _known(leaf)]
    return [exc]


def _ssl_text(exc: ssl.SSLError) -> str:
    text = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
    match = _SSL_TEXT.match(text)
    return match.group("text") if match else text


def _words(exc: BaseException, host: str) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = (getattr(exc, "verify_message", None) or _ssl_text(exc)).rstrip(".")
        reason = _lower_first(reason)
        where = "" if f"'{host}'" in reason else f" for {host}"
        return f"TLS: certificate verify failed: {reason}{where}"
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return "TLS: the server closed the connection during the handshake"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: handshake failed: {_ssl_text(exc)}"
    if isinstance(exc, socket.gaierror):
        if exc.errno in _NOT_FOUND:
            return f"DNS: name not found: {host}"
        if exc.errno == getattr(socket, "EAI_AGAIN", None):
            return f"DNS: temporary failure resolving {host}"
        return f"DNS: {exc.strerror or exc} ({host})"
    if isinstance(exc, OSError):
        if exc.errno in _ERRNO_WORDS:
            return _ERRNO_WORDS[exc.errno]
        if exc.errno is not None and exc.strerror:
            return exc.strerror[:1].lower() + exc.strerror[1:]
    if isinstance(exc, trio.BrokenResourceError):
        return "connection broken"
    if isinstance(exc, trio.ClosedResourceError):
        return "connection closed"
    text = str(exc).strip().rstrip(".")
    if not text:
        return type(exc).__name__
    if type(exc).__module__.startswith(("h11", "httptools")):
        return f"malformed HTTP from the server: {text}"
    return _lower_first(text)


def _lower_first(text: str) -> str:
    """Mid-sentence case: "Server disconnected" → "server disconnected"; "IP address" stays."""
    if len(text) > 1 and text[0].isupper() and not text[1].isupper():
        return text[0].lower() + text[1:]
    return text


def describe(exc: BaseException, host: str) -> str:
    """What broke, in words: each distinct innermost failure under ``exc``, joined by ``; ``."""
    texts: list[str] = []
    for leaf in _leaves(exc, set()):
        text = _words(leaf, host)
        if text not in texts:
            texts.append(text)
    return "; ".join(texts)


def _any_leaf(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> bool:
    return any(isinstance(leaf, kinds) for leaf in _leaves(exc, set()))


def is_certificate_failure(exc: BaseException) -> bool:
    """The server's certificate (or its host name) did not verify: a misconfiguration."""
    return _any_leaf(exc, (ssl.SSLCertVerificationError,))


def timed_out(after: float | None, doing: str, label: str) -> str:
    """``timed out after 30 s reading the response (https://api.example.com:443)``."""
    if after is None:
        return f"timed out {doing} ({label})"
    return f"timed out after {after:g} s {doing} ({label})"
