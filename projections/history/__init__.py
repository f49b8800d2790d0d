"""The history projection: ledger events → ``historical_transactions`` (``rows``: pure; ``projector``: the
consumer; run with ``python -m projections.history``)."""
