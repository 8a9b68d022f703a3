"""Tools for a developer's machine, tests and benchmarks: never imported by the serving code, never in its image.

``python -m devtools publish|tail|services|demo``; the worker-process helper is ``devtools.workers``.
"""
