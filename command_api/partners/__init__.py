"""Admin use cases for partners: external services and their API keys."""
