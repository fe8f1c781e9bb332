"""The trainer (fit), its per-epoch record and monitors, experiment tracking, and the configuration review."""
