"""The balancer from synchronous code: scripts, thread pools, notebooks.

::

    import llmlb_actors as llmlb
    from llmlb_actors import sync

    with sync.open_balancer(config) as lb:
        response = lb.request(llmlb.LLMRequest(prompt="hi"))
        for chunk in lb.stream(llmlb.LLMRequest(prompt="a story")):
            print(chunk.delta, end="")

The same trio balancer runs on a thread of its own; any number of threads
may call it, including one running an asyncio loop (a Jupyter cell). See the
README section "Using it synchronously".
"""

from ._frontends._sync import Balancer as Balancer
from ._frontends._sync import open_balancer as open_balancer
from ._frontends._sync_streams import BatchIterator as BatchIterator
from ._frontends._sync_streams import Stream as Stream

__all__ = ["Balancer", "BatchIterator", "Stream", "open_balancer"]

for _name in __all__:
    # Reprs and tracebacks name llmlb_actors.sync.X, not the private module.
    globals()[_name].__module__ = __name__
del _name
