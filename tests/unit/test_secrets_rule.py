"""The one credential rule (`llmlb_actors._secrets`) and its redactor."""

from __future__ import annotations

from typing import TYPE_CHECKING

import llmlb_actors as llmlb
from llmlb_actors import _secrets
from llmlb_actors._secrets import (
    MIN_LENGTH,
    Redactor,
    Secret,
    balancer_secrets,
    provider_secrets,
    url_password,
)

if TYPE_CHECKING:
    import pytest


def _provider(**fields: object) -> llmlb.ProviderConfig:
    return llmlb.ProviderConfig(name="openai", model="m", **fields)  # type: ignore[arg-type]


def test_what_counts_as_a_credential() -> None:
    config = _provider(
        api_key="sk-abc",
        headers={
            "Authorization": "Bearer tok-123",
            "X-Api-Key": "k-456",
            "Cookie": "session=s-789",
            "X-Trace-Id": "trace-0",
        },
    )
    assert provider_secrets(config) == {
        "sk-abc",
        "Bearer tok-123",
        "tok-123",
        "k-456",
        "session=s-789",
    }


def test_short_values_are_not_credentials() -> None:
    redact = Redactor(["abc", "abcd"])
    assert MIN_LENGTH == 4
    assert redact("abc abcd abcde") == "abc *** ***e"


def test_longest_first_and_bytes() -> None:
    redact = Redactor(["hunter2", "hunter2-long"])
    assert redact("x hunter2-long y hunter2") == "x *** y ***"
    assert redact.bytes(b"x hunter2-long y hunter2") == b"x *** y ***"
    assert not Redactor([])
    assert "hunter2" not in repr(redact)


def test_error_redaction_updates_message_and_args() -> None:
    error = llmlb.LLMError("Incorrect API key provided: sk-canary", provider="p")
    assert Redactor(["sk-canary"]).error(error) is error
    assert error.message == "Incorrect API key provided: ***"
    assert error.args == ("Incorrect API key provided: ***",)
    assert "sk-canary" not in str(error) + repr(error)


def test_url_password() -> None:
    assert url_password("http://user:p%40ss@proxy:8080") == ["p%40ss", "p@ss"]
    assert url_password("redis://:pw1234@127.0.0.1:6379/0") == ["pw1234", "pw1234"]
    assert url_password("http://proxy:8080") == []
    assert url_password(None) == []
    assert url_password("http://[::1") == []


def test_a_registered_source_is_redacted_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """Protecting a new field is one entry in a source list."""
    monkeypatch.setattr(
        _secrets, "PROVIDER_SOURCES", [*_secrets.PROVIDER_SOURCES, lambda c: [c.api_version]]
    )
    monkeypatch.setattr(
        _secrets, "BALANCER_SOURCES", [lambda b: url_password(f"http://u:{b.seed}-pw@proxy")]
    )
    provider = _provider(api_key="sk-abc", api_version="ver-secret")
    balancer = llmlb.BalancerConfig(providers=[provider], seed=4321)
    assert balancer_secrets(balancer) == {"sk-abc", "ver-secret", "4321-pw"}
    redact = Redactor.for_provider(provider, balancer)
    assert redact("sk-abc ver-secret 4321-pw") == "*** *** ***"
    assert Redactor.for_balancer(balancer)("ver-secret") == "***"


def test_secret_hides_its_repr_only() -> None:
    value = Secret("Bearer sk-abc")
    assert value == "Bearer sk-abc"
    assert repr(value) == "'***'"
    assert "sk-abc" not in repr(("authorization", value))
