"""The asyncio and synchronous front-ends over the one trio balancer.

Layout: ``_hubs`` moves calls between the trio side and the caller's side
(the "host"), ``_jobs`` runs the caller's operations on the trio side,
``_guest`` and ``_thread`` are the two ways of running trio next to the host
(a guest run on the asyncio loop; a trio thread), ``_aio`` and ``_sync`` are
the facades users hold (re-exported by ``llmlb_actors.aio`` and
``llmlb_actors.sync``).
"""
