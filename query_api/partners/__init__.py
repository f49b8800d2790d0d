"""Partner access in the query API: API-key authentication, per-key rate limits and access logging."""
