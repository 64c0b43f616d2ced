"""Proving the log was not rewritten: full-chain verification and signed checkpoints."""
