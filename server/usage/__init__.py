"""The usage ledger: what each replica served, counted per (namespace, subject, job, hour), flushed
to the storage backend as small segments and read back for usage and cost reports.

    counters     the counted fields and the dimensions they are counted by
    attribution  storage operations charged to the request that caused them
    ledger       the in-memory counts of one replica and their flushing
    segments     the segment layout in storage: write, read back, compact
    query        usage rows over a time range, grouped as asked
    hooks        the calls the cache and session routes make

Nothing is imported here: ``server.config`` reads the settings module, and the CLI must stay light.
"""
