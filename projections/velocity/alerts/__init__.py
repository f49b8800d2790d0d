"""The velocity alerts' read model: ``ogp.alerts.v1`` → ``velocity_alerts`` (``rows``: pure; ``projector``: the
consumer; run with ``python -m projections.velocity.alerts``)."""
