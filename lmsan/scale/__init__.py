"""Many-model scans (``lmsan scan-many``): plan the scans, run one Ray task per model, summarise.

    plan.py     read LIST, a stable scan directory per model, which scans are complete
    worker.py   scan one model in-process exactly as ``lmsan-mine`` does, resuming a checkpoint
    runner.py   Ray: join or start a cluster, one task per model (CPUs, GPUs, retries), collect
    summary.py  per-model results, ``summary.json`` + ``summary.md`` rewritten after each model

Importing this package imports neither torch nor ray (``runner`` imports ray inside its functions,
``worker`` reaches torch through ``lmsan-mine``).
"""
