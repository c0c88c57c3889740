"""llmlb_actors: load-balance LLM API calls with a trio actor system.

The public surface is re-exported here; everything else lives in private
``_modules``. ``llmlb_actors.sim`` (the loopback simulator),
``llmlb_actors.strategies``, ``llmlb_actors.transports``, ``llmlb_actors.testing``
(helpers for your tests), and the front-ends for asyncio and synchronous code,
``llmlb_actors.aio`` and ``llmlb_actors.sync``, are public submodules.
"""

from . import transports as transports
from ._balancer import Balancer as Balancer
from ._balancer import open_balancer as open_balancer
from ._batch import BatchResult as BatchResult
from ._chat import ImagePart as ImagePart
from ._chat import JSONSchema as JSONSchema
from ._chat import TextPart as TextPart
from ._chat import Tool as Tool
from ._chat import ToolCall as ToolCall
from ._config import BalancerConfig as BalancerConfig
from ._config import ProviderConfig as ProviderConfig
from ._config import ProviderState as ProviderState
from ._errors import BalancerClosedError as BalancerClosedError
from ._errors import ConfigError as ConfigError
from ._errors import LLMError as LLMError
from ._errors import LLMLBError as LLMLBError
from ._errors import LoadBalancerError as LoadBalancerError
from ._errors import OverloadedError as OverloadedError
from ._errors import RateLimitedError as RateLimitedError
from ._errors import StrategyError as StrategyError
from ._hedge import Hedge as Hedge
from ._loading import load_config as load_config
from ._models import LLMRequest as LLMRequest
from ._models import LLMResponse as LLMResponse
from ._models import Message as Message
from ._models import StreamChunk as StreamChunk
from ._models import Usage as Usage
from ._stats import BalancerTotals as BalancerTotals
from ._stats import ProviderHealth as ProviderHealth
from ._stats import ProviderStats as ProviderStats
from ._version import __version__ as __version__
from .providers._base import BaseProvider as BaseProvider

__all__ = [
    "Balancer",
    "BalancerClosedError",
    "BalancerConfig",
    "BalancerTotals",
    "BaseProvider",
    "BatchResult",
    "ConfigError",
    "Hedge",
    "ImagePart",
    "JSONSchema",
    "LLMError",
    "LLMLBError",
    "LLMRequest",
    "LLMResponse",
    "LoadBalancerError",
    "Message",
    "OverloadedError",
    "ProviderConfig",
    "ProviderHealth",
    "ProviderState",
    "ProviderStats",
    "RateLimitedError",
    "StrategyError",
    "StreamChunk",
    "TextPart",
    "Tool",
    "ToolCall",
    "Usage",
    "__version__",
    "load_config",
    "open_balancer",
]


def _fixup_module_metadata() -> None:
    # Tracebacks show llmlb_actors.LLMError, not llmlb_actors._errors.LLMError. Structs
    # keep their module: msgspec resolves their postponed annotations there.
    import msgspec

    for name in __all__:
        obj = globals()[name]
        if isinstance(obj, type) and issubclass(obj, msgspec.Struct):
            continue
        if getattr(obj, "__module__", "").startswith("llmlb_actors."):
            obj.__module__ = __name__


_fixup_module_metadata()
del _fixup_module_metadata
