"""The validation engine: every rule of validation-rules.md as a named, tested unit."""
