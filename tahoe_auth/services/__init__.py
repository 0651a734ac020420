"""Use cases: each owns its transaction and says what changed."""
