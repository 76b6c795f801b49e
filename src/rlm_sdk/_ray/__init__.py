"""The parts of :mod:`rlm_sdk.ray`: the actors' configuration, the record files, the code that
runs in the cluster, and the driver. Private; the public names are in ``rlm_sdk.ray``.

A package rather than ``_ray_*.py`` modules beside ``ray.py``, so that ``import ray`` here can
only mean Ray itself.
"""
