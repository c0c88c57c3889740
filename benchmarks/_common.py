"""What every benchmark process shares: the fixed exchange, core pinning, CPU and memory probes.

Kept free of heavy imports (no trio, no aiohttp): the runner, the worker and
the asyncio clients all import it.
"""

from __future__ import annotations

import os
import resource

import msgspec

__all__ = [
    "CLIENT_CORE",
    "MODEL",
    "PROMPT",
    "REPLY_JSON",
    "UPSTREAM_CORE",
    "ChatBody",
    "Completion",
    "current_rss_kib",
    "peak_rss_kib",
    "pin",
    "proc_cpu_seconds",
    "raise_fd_limit",
]

#: The 2-core layout of the baseline: the upstream on core 0, the client under test on core 1.
UPSTREAM_CORE = 0
CLIENT_CORE = 1

MODEL = "gpt-sim"
PROMPT = "Write a funny dad joke."

#: The fixed reply nginx serves for ``POST /v1/chat/completions`` (a real OpenAI shape,
#: ~400 bytes, so LiteLLM's pydantic models accept it too). No ``$`` or ``'``: nginx would
#: read them as variables or the end of the string.
REPLY_JSON = (
    '{"id":"chatcmpl-bench","object":"chat.completion","created":1764115200,'
    f'"model":"{MODEL}","system_fingerprint":null,"choices":[{{"index":0,'
    '"message":{"role":"assistant","content":"Why did the scarecrow win an award? '
    'Because he was outstanding in his field.","refusal":null},"logprobs":null,'
    '"finish_reason":"stop"}],"usage":{"prompt_tokens":13,"completion_tokens":17,'
    '"total_tokens":30}}'
)


class _Msg(msgspec.Struct):
    role: str
    content: str


class ChatBody(msgspec.Struct, omit_defaults=True):
    """The request body the raw clients encode (what the OpenAI adapter sends)."""

    model: str
    messages: list[_Msg]
    max_tokens: int | None = None
    stream: bool = False

    @classmethod
    def make(cls, *, stream: bool = False) -> ChatBody:
        return cls(model=MODEL, messages=[_Msg("user", PROMPT)], stream=stream)


class _ReplyMessage(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    message: _ReplyMessage
    finish_reason: str | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Completion(msgspec.Struct):
    """A typed view of the reply: the raw clients decode into it, as the adapter does."""

    choices: list[_Choice]
    model: str = ""
    usage: _Usage | None = None


def pin(core: int) -> None:
    """Pin this process (and its future children) to one core, if the machine has it."""
    available = os.sched_getaffinity(0)
    if core in available or core < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {core})


def raise_fd_limit() -> int:
    """Raise the soft descriptor limit to the hard one (thousands of sockets); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def peak_rss_kib() -> int:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def current_rss_kib() -> int:
    """Resident set size now (from /proc; 0 where it is unavailable)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = int(f.read().split()[1])
    except OSError:
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def proc_cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of other processes (the upstream), from /proc/<pid>/stat."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / ticks
