"""Side-by-side benchmarks of llmlb_actors against raw HTTP clients and LiteLLM.

Run ``make bench`` (or ``python -m benchmarks.run --help``). See ``benchmarks/README.md``.
"""
