"""Datastores, datasets and the data a run reads and writes."""
