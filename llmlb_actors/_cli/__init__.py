"""The ``llmlb`` command's implementation: one module per command plus the shared pieces.

Strictly private; the public entry point is `llmlb_actors.cli`.
"""
