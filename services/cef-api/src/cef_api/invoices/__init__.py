"""Invoices: submission, validation jobs, views and the decision workflow."""
