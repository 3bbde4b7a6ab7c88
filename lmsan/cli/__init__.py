"""Console scripts. Each command imports its subsystem inside the command body, so ``--help``
stays fast and ``lmsan-guard`` never loads torch."""
