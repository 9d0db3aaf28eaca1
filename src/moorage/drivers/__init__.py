"""Drivers run workloads for the agent: the contract every driver implements and its
capabilities (`base.py`), the process driver and its executor, the Docker driver.

This package's `__init__` imports nothing on purpose: each task's executor runs as
`python -m moorage.drivers._executor`, forked from a zygote, and must stay as small and quick
to fork as the standard library allows (no pydantic, no moorage model). Import from the
modules themselves (`moorage.drivers.base`).
"""
