"""The asyncio and synchronous front-ends over the one trio balancer.

Layout: ``_hubs`` moves calls between the trio side and the caller's side
(the "host"); ``_jobs`` describes the caller's operations and runs streams
and batches on the trio side, ``_host`` holds the trio balancer and runs
calls on a pool of worker tasks; ``_runtime`` is what a facade holds of it,
``_thread`` and ``_guest`` the two ways of running trio next to the host (a
trio thread; a guest run on the asyncio loop); ``_aio``/``_aio_streams`` and
``_sync``/``_sync_streams`` are the facades users hold (re-exported by
``llmlb_actors.aio`` and ``llmlb_actors.sync``).
"""
