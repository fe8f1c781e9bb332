"""Exceptions raised by halo_core; messages say where, what is wrong, and what was expected."""


class HaloError(Exception):
    """Base class of every error halo raises on purpose."""


class ConfigError(HaloError):
    """A preset or override is unknown, mistyped or inconsistent."""


class ContractError(HaloError):
    """A dataset breaks the paired-parquet data contract (docs/design.md §3 (data contract))."""


class StampDecodeError(HaloError):
    """One stamp blob cannot be decoded into a (3, 64, 64) image; ``reason`` is the quarantine bucket."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


class CheckpointError(HaloError):
    """A checkpoint is missing, truncated, or does not match the data path."""


class TrainingError(HaloError):
    """Training cannot go on (non-finite loss, a single-class training set, a leaking dataset)."""


class StorageError(HaloError):
    """An output location cannot be written."""


class BuildLockedError(StorageError):
    """A dataset's output location is being built by another process, or is not a build's to replace."""
