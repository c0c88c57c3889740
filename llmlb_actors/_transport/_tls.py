"""Which certificates both transports trust, decided in one place.

* ``ssl_context``: used as given (the caller owns its trust and ALPN);
* ``ca_bundle``: a PEM file (or a directory of hashed certificates) trusted
  *instead of* the system store, as curl's ``--cacert`` does;
* neither: the system store. OpenSSL reads it from its default paths, and from
  ``SSL_CERT_FILE``/``SSL_CERT_DIR`` when those are set: honoured when
  ``trust_env`` is true (the default), ignored otherwise. A system with no CA
  store at all falls back to certifi's bundle (installed with httpx), so
  HTTPS still verifies rather than failing for every host.

httpx's own default (certifi only, ``SSL_CERT_FILE`` ignored unless its
``trust_env``) is never used: the httpx transport gets this same context.
For the operating system's native store on macOS and Windows (as pip does),
pass ``ssl_context=truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)``.
Strictly private.
"""

from __future__ import annotations

import logging
import os
import ssl

__all__ = ["check_trust_options", "client_context"]

log = logging.getLogger("llmlb_actors.transport")


def check_trust_options(
    *, verify_tls: bool, ca_bundle: str | None, ssl_context: ssl.SSLContext | None
) -> None:
    """Refuse combinations that would leave the meaning ambiguous.

    Raises:
        ValueError: both ``ca_bundle`` and ``ssl_context``; either with
            ``verify_tls=False``; a ``ca_bundle`` that does not exist; an
            ``ssl_context`` that is not an `ssl.SSLContext`.
    """
    if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
        raise ValueError(f"ssl_context must be an ssl.SSLContext, got {type(ssl_context).__name__}")
    if ca_bundle is not None and ssl_context is not None:
        raise ValueError("pass either ca_bundle or ssl_context, not both")
    if not verify_tls and (ca_bundle is not None or ssl_context is not None):
        which = "ca_bundle" if ca_bundle is not None else "ssl_context"
        raise ValueError(f"pass either {which} or verify_tls=False, not both")
    if ca_bundle is not None:
        if not isinstance(ca_bundle, str | os.PathLike):
            raise ValueError("ca_bundle must be a path to a PEM file or a certificate directory")
        if not os.path.exists(ca_bundle):
            raise ValueError(f"ca_bundle {os.fspath(ca_bundle)!r} does not exist")


def client_context(
    *,
    verify_tls: bool = True,
    ca_bundle: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    trust_env: bool = True,
) -> ssl.SSLContext:
    """The SSL context for https origins (see the module docstring).

    Raises:
        ValueError: as `check_trust_options`, or a ``ca_bundle`` OpenSSL cannot load.
    """
    check_trust_options(verify_tls=verify_tls, ca_bundle=ca_bundle, ssl_context=ssl_context)
    if ssl_context is not None:
        return ssl_context
    if ca_bundle is not None:
        path = os.fspath(ca_bundle)
        try:
            if os.path.isdir(path):
                context = ssl.create_default_context(capath=path)
            else:
                context = ssl.create_default_context(cafile=path)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"ca_bundle {path!r} could not be loaded: {exc}") from None
    elif trust_env or not verify_tls:
        # OpenSSL's default paths, which include SSL_CERT_FILE and SSL_CERT_DIR when set.
        context = ssl.create_default_context()
        paths = ssl.get_default_verify_paths()
        if verify_tls and paths.cafile is None and paths.capath is None:
            _load_certifi(context)
    else:
        paths = ssl.get_default_verify_paths()
        cafile = paths.openssl_cafile if os.path.isfile(paths.openssl_cafile) else None
        capath = paths.openssl_capath if os.path.isdir(paths.openssl_capath) else None
        if cafile is None and capath is None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # empty: not even the env's
            _load_certifi(context)
        else:
            context = ssl.create_default_context(cafile=cafile, capath=capath)
    if not verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    return context


def _load_certifi(context: ssl.SSLContext) -> None:
    try:
        import certifi
    except ImportError:  # pragma: no cover - httpx depends on certifi
        log.warning("no system CA store and no certifi: HTTPS certificates cannot be verified")
        return
    log.info("no system CA store found: trusting certifi's bundle")
    context.load_verify_locations(cafile=certifi.where())
