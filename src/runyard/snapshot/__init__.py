"""Snapshots of source directories: ignore rules, limits, manifests, restore."""
