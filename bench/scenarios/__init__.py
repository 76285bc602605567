"""The scenarios, in the order the suite runs them (cheap and quick ones first)."""
