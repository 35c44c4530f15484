"""Compute targets: where a run's supervisor is started. Only ``local`` for now."""
