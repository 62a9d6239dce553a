"""Offline evaluation: metrics, split protocols, the harness, plots and reports."""
