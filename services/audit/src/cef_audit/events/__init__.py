"""Appending events, querying them and exporting them (JSON Lines, CSV, FHIR R4)."""
