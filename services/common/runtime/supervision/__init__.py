"""The workload supervisor's modules: standard library only, loaded by the supervisor by path.

services/common/runtime/supervisor.py is the entry point and says why (its isolation). Nothing
here may import from ``services`` (or any non-stdlib package): the supervisor runs with
``-I -S`` and imports this package as the top-level ``supervision``.
"""
