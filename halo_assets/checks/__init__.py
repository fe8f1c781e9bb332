"""Asset checks (docs/design.md §5 (verdict)), one module per family: ``data`` (data quality, blocking), ``training`` (the
plan's training monitors and the configuration review, WARN), ``gates`` (shortcut gates) and ``go_no_go``
(the criteria on the evaluation report). Each reports the observed value next to its threshold and the
sample count; blocking checks stop everything downstream, so a failed criterion withholds
`promoted_model`. Every check is partitioned like its asset, so each profile keeps its own history."""

import warnings

import dagster as dg

# Partitioned checks are a preview API in Dagster 1.13; they are what keeps a profile's check history its own.
warnings.filterwarnings("ignore", message=".*partitions_def on an AssetCheckSpec", category=dg.PreviewWarning)

from halo_assets.checks.data import DATA_CHECKS  # noqa: E402
from halo_assets.checks.gates import GATE_CHECKS  # noqa: E402
from halo_assets.checks.go_no_go import REPORT_CHECKS  # noqa: E402
from halo_assets.checks.training import CONFIG_REVIEW_CHECKS, TRAINING_CHECKS  # noqa: E402

GO_NO_GO_CHECKS = [*REPORT_CHECKS, *GATE_CHECKS]

__all__ = ["CONFIG_REVIEW_CHECKS", "DATA_CHECKS", "GATE_CHECKS", "GO_NO_GO_CHECKS", "REPORT_CHECKS", "TRAINING_CHECKS"]
