"""Cost reports: the usage ledger and the stored bytes, priced, with what the cache saved.

    prices   the ``prices:`` config section (Google's list prices by default)
    report   the arithmetic: rows per namespace (or job), totals, a time series
    render   CSV and Markdown
    html     a self-contained HTML page with inline SVG charts (charts)

Nothing is imported here: ``server.config`` reads the prices module, and the CLI must stay light.
"""
