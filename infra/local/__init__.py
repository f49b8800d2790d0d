"""The local infrastructure (Kafka, PostgreSQL, Redis) and the services, run as plain processes."""
