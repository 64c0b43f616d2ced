"""cef_api package."""
