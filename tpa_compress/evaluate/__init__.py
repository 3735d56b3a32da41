"""Measurements: perplexity (and, with converted models, validation against the original)."""
