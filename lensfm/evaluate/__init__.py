"""Metrics, reports and pictures."""
