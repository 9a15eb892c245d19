"""The ASTOR method (docs/METHOD.md): task utility (:mod:`astor_core.method.utility`), the
hierarchical scheduler and its baselines (:mod:`astor_core.method.scheduler`), per-task KL
calibration (:mod:`astor_core.method.calibration`) and the one group-advantage function
(:mod:`astor_core.method.advantages`). Plain numpy: no torch, Prefect or MLflow.
"""
