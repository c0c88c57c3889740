"""A loopback simulator of the providers' real HTTP APIs, faults included.

It speaks OpenAI chat completions (and OpenAI-compatible servers), Anthropic
Messages, Gemini generateContent, Cohere Chat v2 and Mistral, whole and
streamed, so the balancer, its tests, the demo and the benchmarks (and the
official SDKs) can run against it with no network::

    async with open_simulator(
        [SimProvider(name="a", protocol="openai", api_key="sk-a", model="gpt-sim")]
    ) as sim:
        config = sim.provider_config("a")
        sim.script("a", ["503", "ok"])

From asyncio or synchronous code, ``with SimulatorThread([...]) as sim:`` runs
it on a thread of its own, with the same handle methods.
"""

import contextlib

from ._behaviour import OUTCOMES as OUTCOMES
from ._behaviour import Behaviour as Behaviour
from ._behaviour import SimProtocol as SimProtocol
from ._behaviour import SimProvider as SimProvider
from ._simulator import Simulator as Simulator
from ._simulator import open_simulator as open_simulator
from ._simulator import serve_simulator as serve_simulator
from ._stats import SimStats as SimStats
from ._thread import SimulatorThread as SimulatorThread

__all__ = [
    "OUTCOMES",
    "Behaviour",
    "SimProtocol",
    "SimProvider",
    "SimStats",
    "Simulator",
    "SimulatorThread",
    "open_simulator",
    "serve_simulator",
]

for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith(__name__ + "."):
        with contextlib.suppress(AttributeError, TypeError):
            _obj.__module__ = __name__
del _name, _obj
