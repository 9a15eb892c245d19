"""One training run as plain functions (DESIGN.md, "One round, as data").

flows/training.py wraps each stage in one Prefect task; nothing here imports Prefect or
MLflow, so every stage can be called, tested and benchmarked on its own
(benchmarks/orchestration_overhead.py calls them directly to price the orchestration).

- :mod:`astor_core.run.context`: the run's live objects; open or resume a run.
- :mod:`astor_core.run.stages`: the stages of one round (schedule, rollout, reward, train,
  scheduler and KL update, evaluation).
- :mod:`astor_core.run.records`: the typed per-round and per-task records; the CSV columns,
  the MLflow series and the plotted series all come from :class:`TaskRoundStats`.
- :mod:`astor_core.run.store`: what a run keeps on disk (stats, checkpoints, rounds.csv).
- :mod:`astor_core.run.report`: the eval table, the summary and the plots.
- :mod:`astor_core.run.ranks`: one `accelerate launch` for many ranks: what rank 0 broadcasts
  (typed orders), the sharded rollouts, and the other ranks' loop.

A run lives in ``train.run_dir``::

    run.json                 the run's config
    checkpoints/round-NNNNNN model, optimizer, LR schedule, RNG, scheduler + calibration state
    stats/round-NNNNNN.json  the round's RoundStats (MLflow re-logs from these on resume)
    rounds.csv               one row per round and task (DVC plots)
    eval.json                the last held-out evaluation (DVC metrics)
"""
