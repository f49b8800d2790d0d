"""Export for analysts: a range of the ledger-events or commands topic as Parquet files, resumable (``schema``:
the columns, pure; ``parts``: the files and the manifest; ``exporter``: reading Kafka; run with
``ogp events export``). The schema is documented in docs/architecture.md, "Export for analysts"."""
