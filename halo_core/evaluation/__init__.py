"""Held-out metrics, calibration, diagnostics, shortcut gates, shift suite, real-lens validation, the report and the go/no-go verdict (the `evaluation` asset group)."""
