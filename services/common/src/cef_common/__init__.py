"""cef_common package."""
