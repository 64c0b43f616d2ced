"""cef_audit package."""
