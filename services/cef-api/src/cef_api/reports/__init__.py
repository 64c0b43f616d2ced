"""Aggregate reports for commissioners."""
