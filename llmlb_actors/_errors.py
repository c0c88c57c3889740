"""The one exception tree of llmlb_actors.

::

    LLMLBError                      base of everything this library raises on purpose
    ├── LLMError                    one attempt at one provider failed (or a stream broke)
    ├── LoadBalancerError           a request failed as a whole; ``.errors`` holds every attempt
    │   ├── StrategyError           a routing strategy raised or chose something impossible
    │   ├── OverloadedError         every mailbox is full and the balancer is set to fail fast
    │   ├── RateLimitedError        no provider's budget admits the request, and it cannot wait
    │   └── BalancerClosedError     the balancer shut down (or was closed) before answering
    └── ConfigError                 bad configuration or bad input (also a ``ValueError``)

Transport-level exceptions (``llmlb_actors._transport``) never reach users: the
provider layer translates them into ``LLMError`` in one place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "ALL_REFUSED",
    "BalancerClosedError",
    "ConfigError",
    "ErrorKind",
    "LLMError",
    "LLMLBError",
    "LoadBalancerError",
    "OverloadedError",
    "RateLimitedError",
    "StrategyError",
]

ErrorKind = Literal[
    "http",  # the provider answered with an error status
    "timeout",  # the attempt, a connect, a read or a stream stall timed out
    "connection",  # connect refused, reset, closed early, DNS
    "tls",  # the server's certificate or host name did not verify (a misconfiguration)
    "proxy",  # the proxy is unreachable, or refused the request or tunnel (403, 407, 502)
    "protocol",  # the answer was malformed: bad JSON, wrong shape, oversized, broken stream
    "crash",  # the provider actor crashed or was removed while holding the attempt
    "cancelled",  # the caller gave up (deadline or cancellation)
    "provider",  # a user-written provider raised LLMError itself
]

_MAX_MESSAGE = 500

#: How a request's `LoadBalancerError` message starts when it was not sent at all because
#: every provider refused requests (401/403/404) and is cooling down (README: Errors).
ALL_REFUSED = "All providers are out of rotation"


def _truncate(text: str, limit: int = _MAX_MESSAGE) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class LLMLBError(Exception):
    """Base class of every error raised on purpose by llmlb_actors."""


class LLMError(LLMLBError):
    """One attempt against one provider failed.

    Raised by adapters and providers, collected by the balancer into
    `LoadBalancerError.errors`, and raised directly from streams that break
    after their first chunk (then ``partial`` is true and ``partial_text``
    holds what the caller already received).

    Attributes:
        provider: name of the provider (never its key).
        status: HTTP status, or ``None`` when no response arrived.
        retryable: whether another attempt may succeed.
        kind: a coarse classification, see `ErrorKind`.
        retry_after: seconds the provider asked us to wait, if it said so.
        partial: the stream had already delivered text to the caller.
        partial_text: the text delivered before the failure.
        disables_provider: the provider looks misconfigured (401/403/404) and
            should leave rotation.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status: int | None = None,
        retryable: bool = False,
        kind: ErrorKind = "http",
        retry_after: float | None = None,
        partial: bool = False,
        partial_text: str = "",
        disables_provider: bool = False,
    ) -> None:
        message = _truncate(message)
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status = status
        self.retryable = retryable
        self.kind: ErrorKind = kind
        self.retry_after = retry_after
        self.partial = partial
        self.partial_text = partial_text
        self.disables_provider = disables_provider

    def __str__(self) -> str:
        where = f"[{self.provider}] " if self.provider else ""
        status = f"HTTP {self.status}: " if self.status is not None else ""
        return f"{where}{status}{self.message}"

    def __repr__(self) -> str:
        return (
            f"LLMError({self.message!r}, provider={self.provider!r}, status={self.status!r}, "
            f"kind={self.kind!r}, retryable={self.retryable!r}, partial={self.partial!r})"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_llm_error, (self.message, dict(self.__dict__)))


def _rebuild_llm_error(message: str, state: dict[str, object]) -> LLMError:
    err = LLMError(message)
    err.__dict__.update(state)
    return err


class LoadBalancerError(LLMLBError):
    """A request failed as a whole.

    Raised by `Balancer.request` and `Balancer.stream` when every allowed
    attempt failed, when the overall deadline passed, or when no provider can
    take the request. ``errors`` lists each attempt's `LLMError` in order.
    """

    def __init__(self, message: str, errors: Sequence[LLMError] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.errors: list[LLMError] = list(errors)

    def __str__(self) -> str:
        if not self.errors:
            return self.message
        tail = "; ".join(str(e) for e in self.errors[-5:])
        more = f" (+{len(self.errors) - 5} earlier)" if len(self.errors) > 5 else ""
        return f"{self.message}: {tail}{more}"


class StrategyError(LoadBalancerError):
    """The routing strategy raised, or returned something that is not a candidate."""


class OverloadedError(LoadBalancerError):
    """Every mailbox is full and the balancer is configured with ``on_overload="fail"``."""


class RateLimitedError(LoadBalancerError):
    """No provider's budget (``rpm``, ``tpm``, a learned limit, a Retry-After...) admits
    the request now, and it may not wait: ``on_overload="fail"``, or the earliest refill
    comes after the request's deadline.

    Attributes:
        retry_after: seconds until some provider's budget admits it, or ``None`` when
            that is not known (a probe or a hold without an end is pending).
        budgets: provider name → the budget that refused it (``"rpm"``, ``"tpm"``,
            ``"rpd"``, ``"tpd"``, ``"retry-after"``, ``"daily-quota"``, ...).
    """

    def __init__(
        self,
        message: str,
        errors: Sequence[LLMError] = (),
        *,
        retry_after: float | None = None,
        budgets: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, errors)
        self.retry_after = retry_after
        self.budgets: dict[str, str] = dict(budgets or {})


class BalancerClosedError(LoadBalancerError):
    """The balancer shut down, or was already closed, before the request was answered.

    Says nothing about the request itself: a batch run treats such a request as
    not yet answered (it is retried on resume), not as a failure.
    """


class ConfigError(LLMLBError, ValueError):
    """A configuration value or request field is invalid.

    Raised before anything is sent. ``field`` is the dotted path of the
    offending field (``providers[1].weight``), and the message names it too.
    """

    def __init__(self, message: str, *, field: str = "", source: str = "") -> None:
        prefix = f"{source}: " if source else ""
        where = f"{field}: " if field and field not in message else ""
        super().__init__(f"{prefix}{where}{message}")
        self.field = field
        self.source = source
