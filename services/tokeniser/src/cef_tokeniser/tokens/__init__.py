"""Tokenising, re-tokenising and re-identifying patient identifiers."""
