"""Reference data: GP practices, patients, registrations, districts, tariff, providers, services."""
