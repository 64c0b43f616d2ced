"""Tests of the validation engine."""
