"""Budgets and health shared by several balancers through Redis (``shared_state``).

``_url`` reads the ``redis://`` / ``rediss://`` URL; ``_scripts`` holds the
Lua scripts that make every budget decision atomically on the server;
``_store`` is `RedisQuotaStore`, the `QuotaStore` behind ``shared_state``.
Strictly private: the public name is re-exported by ``llmlb_actors.quota``.
"""
