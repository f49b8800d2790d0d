"""The test suite: unit, integration and end-to-end tiers, and their shared harness in `tests.support`."""
