"""Evaluate a model on the test split, explain it, and vote an ensemble; their reports."""
