"""The access-log projection: access-log events → ``api_access_logs`` (``rows``: pure; ``projector``: the
consumer; run with ``python -m projections.access_logs``)."""
