"""The payments projection: ledger events → ``payments`` (``rows``: pure; ``projector``: the consumer; run with
``python -m projections.payments``)."""
