"""The balancer from asyncio code.

::

    import llmlb_actors as llmlb
    from llmlb_actors import aio

    async with aio.open_balancer(config) as lb:
        response = await lb.request(llmlb.LLMRequest(prompt="hi"))

The same trio balancer (strategies, retries, stats, errors) runs on a trio
thread of its own (or, with ``runner="guest"``, as a trio guest on the
asyncio loop); see the README section "Using it from asyncio".
"""

from ._frontends._aio import Balancer as Balancer
from ._frontends._aio import open_balancer as open_balancer
from ._frontends._aio_streams import BatchMap as BatchMap
from ._frontends._aio_streams import BatchResults as BatchResults
from ._frontends._aio_streams import Stream as Stream

__all__ = ["Balancer", "BatchMap", "BatchResults", "Stream", "open_balancer"]

for _name in __all__:
    # Reprs and tracebacks name llmlb_actors.aio.X, not the private module.
    globals()[_name].__module__ = __name__
del _name
