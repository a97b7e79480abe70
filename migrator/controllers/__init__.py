"""Reconcilers: one per custom resource, level-triggered, every step recorded in status first."""
