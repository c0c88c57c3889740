"""What the user's code raises inside ``open_balancer`` or ``lb.map`` comes out exactly as
raised: the same object, groups with every member, context, cause and traceback intact."""

from __future__ import annotations

import traceback
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import pytest
import trio
import trio.lowlevel

import llmlb_actors as llmlb

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from trio.testing import MockClock


class Echo(llmlb.BaseProvider):
    async def make_request(self, request: llmlb.LLMRequest) -> llmlb.LLMResponse:
        await trio.lowlevel.checkpoint()
        return llmlb.LLMResponse(
            content=request.prompt or "", model="echo", usage=llmlb.Usage(), finish_reason="stop"
        )


@asynccontextmanager
async def balancer() -> AsyncIterator[llmlb.Balancer]:
    async with llmlb.open_balancer(providers=[llmlb.ProviderConfig(name="e", provider=Echo)]) as lb:
        yield lb


@asynccontextmanager
async def mapped() -> AsyncIterator[llmlb.Balancer]:
    """The same block, inside ``lb.map`` as well."""
    async with balancer() as lb, lb.map([llmlb.LLMRequest(prompt="x")]) as results:
        async for _ in results:
            pass
        yield lb


async def two_failures() -> None:
    async def value() -> None:
        raise ValueError("mine")

    async def key() -> None:
        raise KeyError("also mine")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(value)
        nursery.start_soon(key)


@pytest.mark.parametrize("block", [balancer, mapped])
async def test_an_exception_group_stays_a_group_with_every_member(block: object) -> None:
    caught: list[str] = []
    try:
        async with block() as lb:  # type: ignore[operator]
            await lb.request(llmlb.LLMRequest(prompt="hi"))
            await two_failures()
    except* ValueError as group:
        caught += [str(e) for e in group.exceptions]
    except* KeyError as group:
        caught += [str(e) for e in group.exceptions]
    assert sorted(caught) == ["'also mine'", "mine"]

    # Not wrapped in another group of ours: the user's nursery group itself.
    with pytest.raises(ExceptionGroup) as info:
        async with block() as lb:  # type: ignore[operator]
            await two_failures()
    assert sorted(type(e).__name__ for e in info.value.exceptions) == ["KeyError", "ValueError"]


@pytest.mark.parametrize("block", [balancer, mapped])
async def test_the_same_exception_with_context_cause_and_traceback(block: object) -> None:
    raised: list[BaseException] = []

    def fail() -> None:
        try:
            {}["missing"]
        except KeyError:
            error = RuntimeError("while handling a missing key")
            raised.append(error)
            raise error from ConnectionError("the cause")

    with pytest.raises(RuntimeError) as info:  # noqa: PT012 - the block is the subject
        async with block() as lb:  # type: ignore[operator]
            await lb.request(llmlb.LLMRequest(prompt="hi"))
            fail()
    assert info.value is raised[0]
    assert isinstance(info.value.__context__, KeyError)
    assert isinstance(info.value.__cause__, ConnectionError)
    frames = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert "fail" in frames


async def test_context_without_a_cause_is_shown_too() -> None:
    with pytest.raises(ValueError, match="second") as info:  # noqa: PT012 - the block is the subject
        async with balancer():
            try:
                raise KeyError("first")
            except KeyError:
                raise ValueError("second")  # noqa: B904 - the implicit context is the point
    assert isinstance(info.value.__context__, KeyError)
    assert not info.value.__suppress_context__


async def test_cancellation_still_propagates(autojump_clock: MockClock) -> None:
    with trio.move_on_after(0.01) as scope:
        async with balancer():
            await trio.sleep_forever()
    assert scope.cancelled_caught
