"""Providers: `BaseProvider` for your own, and the built-in wire protocols."""

from ._base import BaseProvider as BaseProvider
from ._base import HTTPProvider as HTTPProvider
from ._base import ProtocolAdapter as ProtocolAdapter
from ._base import StreamDecoder as StreamDecoder

__all__ = ["BaseProvider", "HTTPProvider", "ProtocolAdapter", "StreamDecoder"]
