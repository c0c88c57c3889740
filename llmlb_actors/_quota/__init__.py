"""Quota-aware balancing: budgets, what providers say about them, and where they live.

Layered like the rest of the package: ``_window``, ``_bucket`` and ``_daily`` are
pure arithmetic on ``now`` and state; ``_budget`` combines them into one
provider's budget; ``_headers`` and ``_estimate`` read responses and requests;
``_store`` is the `QuotaStore` seam and the in-process store. Strictly private:
the public names are re-exported by ``llmlb_actors.quota``.
"""
