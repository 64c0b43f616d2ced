"""The `cef` command."""
