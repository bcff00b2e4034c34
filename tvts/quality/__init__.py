"""Data quality: expectation suites (great-expectations) and the quarantine they feed."""
