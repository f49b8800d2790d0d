"""The query API's routers."""
