"""The public surface is deliberate: `__all__` is sorted, complete and re-exported once."""

from __future__ import annotations

import msgspec

import llmlb_actors


def test_all_is_sorted_and_matches_public_names() -> None:
    public = sorted(n for n in dir(llmlb_actors) if not n.startswith("_") and n[0].isupper())
    exported = [n for n in llmlb_actors.__all__ if not n.startswith("_") and n[0].isupper()]
    assert exported == sorted(exported)
    assert set(public) <= set(llmlb_actors.__all__)


def test_design_names_exist() -> None:
    for name in (
        "open_balancer",
        "BalancerConfig",
        "ProviderConfig",
        "LLMRequest",
        "LLMResponse",
        "Usage",
        "ProviderStats",
        "LLMLBError",
        "LLMError",
        "LoadBalancerError",
        "ConfigError",
        "BaseProvider",
        "StreamChunk",
        "ProviderState",
        "Message",
        "TextPart",
        "ImagePart",
        "Tool",
        "ToolCall",
        "JSONSchema",
    ):
        assert hasattr(llmlb_actors, name), name


def test_errors_report_the_public_module() -> None:
    assert llmlb_actors.LLMError.__module__ == "llmlb_actors"
    assert llmlb_actors.open_balancer.__module__ == "llmlb_actors"


def test_public_data_types_are_structs() -> None:
    for cls in (
        llmlb_actors.BalancerConfig,
        llmlb_actors.ProviderConfig,
        llmlb_actors.LLMRequest,
        llmlb_actors.LLMResponse,
        llmlb_actors.Usage,
        llmlb_actors.ProviderStats,
        llmlb_actors.StreamChunk,
        llmlb_actors.ProviderState,
        llmlb_actors.Message,
        llmlb_actors.TextPart,
        llmlb_actors.ImagePart,
        llmlb_actors.Tool,
        llmlb_actors.ToolCall,
        llmlb_actors.JSONSchema,
    ):
        assert issubclass(cls, msgspec.Struct), cls


def test_error_tree() -> None:
    assert issubclass(llmlb_actors.LLMError, llmlb_actors.LLMLBError)
    assert issubclass(llmlb_actors.LoadBalancerError, llmlb_actors.LLMLBError)
    assert issubclass(llmlb_actors.ConfigError, llmlb_actors.LLMLBError)
    assert issubclass(llmlb_actors.ConfigError, ValueError)
    assert issubclass(llmlb_actors.RateLimitedError, llmlb_actors.LoadBalancerError)
    assert issubclass(llmlb_actors.StrategyError, llmlb_actors.LoadBalancerError)


def test_public_transports_module() -> None:
    """Users who pass a transport import it from here, never from ``_transport``."""
    from llmlb_actors import transports

    assert transports.__all__ == ["HttpxTransport", "Transport", "TransportLimits", "TrioTransport"]
    assert issubclass(transports.TransportLimits, msgspec.Struct)
    for name in ("HttpxTransport", "Transport", "TrioTransport"):
        assert getattr(transports, name).__module__ == "llmlb_actors.transports", name


def test_front_end_modules_are_deliberate() -> None:
    from llmlb_actors import aio, sync

    assert aio.__all__ == ["Balancer", "BatchMap", "BatchResults", "Stream", "open_balancer"]
    assert sync.__all__ == ["Balancer", "BatchIterator", "Stream", "open_balancer"]
    for module in (aio, sync):
        for name in module.__all__:
            assert getattr(module, name).__module__ == module.__name__, name
    # Both front-ends raise the library's own exception types, exported once.
    assert not hasattr(aio, "LoadBalancerError")
    assert not hasattr(sync, "LoadBalancerError")
