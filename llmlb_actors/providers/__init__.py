"""Providers: `BaseProvider` for your own, and the built-in wire protocols."""

from ._adapter import ProtocolAdapter as ProtocolAdapter
from ._adapter import StreamDecoder as StreamDecoder
from ._base import BaseProvider as BaseProvider
from ._http import HTTPProvider as HTTPProvider

__all__ = ["BaseProvider", "HTTPProvider", "ProtocolAdapter", "StreamDecoder"]
