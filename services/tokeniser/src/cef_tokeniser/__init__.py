"""cef_tokeniser package."""
