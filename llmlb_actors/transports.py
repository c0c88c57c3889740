"""The transports you can build and pass to the balancer yourself.

Most users never need this module: ``BalancerConfig(transport="default" |
"httpx")`` builds one with the balancer's settings (timeouts, size cap,
proxies, trust). Build one here to pass your own ``httpx.AsyncClient``
(``httpx.MockTransport`` in tests, HTTP/2), or to share one transport
between balancers::

    from llmlb_actors.transports import HttpxTransport, TransportLimits

    transport = HttpxTransport(TransportLimits(read_timeout=60), proxy="http://proxy:3128")

A transport you pass keeps its own settings: a `BalancerConfig` that sets
``max_response_bytes``, ``verify_tls``, ``proxy``, ``trust_env``,
``ca_bundle`` or ``ssl_context`` to something else is refused with a
`ConfigError` that says where to set it.

* `TrioTransport`: the default. HTTP/1.1 on trio sockets, httptools parsing,
  a keep-alive pool per origin, proxies (CONNECT and absolute form).
* `HttpxTransport`: the same interface over httpx (one client per origin, or
  the single client you pass).
* `Transport`: the protocol both implement (``request``, ``stream``,
  ``aclose``), for a transport of your own.
* `TransportLimits`: per-phase timeouts, per-origin connection cap, size caps.
"""

from __future__ import annotations

from ._transport._base import Transport, TransportLimits
from ._transport._httpx import HttpxTransport
from ._transport._trio import TrioTransport

__all__ = ["HttpxTransport", "Transport", "TransportLimits", "TrioTransport"]

# Tracebacks and reprs name llmlb_actors.transports.TrioTransport. TransportLimits (a
# msgspec Struct) keeps its module: msgspec resolves its postponed annotations there.
for _cls in (HttpxTransport, Transport, TrioTransport):
    _cls.__module__ = __name__
del _cls
