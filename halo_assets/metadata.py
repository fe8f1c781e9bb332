"""halo_core reports -> Dagster metadata; the only place that knows both vocabularies."""

from __future__ import annotations

import base64
import math
from collections.abc import Callable
from dataclasses import asdict

import dagster as dg
import numpy as np
import pandas as pd

from halo_core.evaluation.report import KEY_PLOTS, REPORT_HTML, thumbnail_path
from halo_core.evaluation.results import EvaluationReport
from halo_core.reports.markup import bin_label

NOT_MEASURABLE = "not measurable"
DIGITS = 4  # significant digits a person reads; report.json keeps full precision


def cell(value):
    """A value as a person reads it: floats to 4 significant digits, NaN/None as "not measurable"."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return NOT_MEASURABLE
    if isinstance(value, (float, np.floating)):
        return float(f"{float(value):.{DIGITS}g}")
    if isinstance(value, np.integer):
        return int(value)
    return value


def table(rows: list) -> dg.MarkdownMetadataValue:
    """Rows (dicts or typed records) as a Markdown table."""
    rows = [r if isinstance(r, dict) else asdict(r) for r in rows]
    return dg.MetadataValue.md(
        pd.DataFrame([{k: cell(v) for k, v in r.items()} for r in rows]).to_markdown(index=False) if rows else "_none_")


def number(value) -> dg.MetadataValue:
    """A rounded float (the UI plots it across materializations), or the words "not measurable" for a
    value that could not be measured (never a fake 0, never `nan`)."""
    value = cell(value)
    if isinstance(value, str):
        return dg.MetadataValue.text(value)
    return dg.MetadataValue.float(value) if isinstance(value, float) else dg.MetadataValue.int(int(value))


def tidy(metadata: dict | None) -> dict:
    """Raw Python numbers in a metadata dict, rounded or "not measurable" (MetadataValues pass as they are)."""
    return {k: number(v) if isinstance(v, (float, np.floating)) or v is None else v for k, v in (metadata or {}).items()}


# every check's first three metadata entries: plain values the UI shows on the check's row (never inside a
# markdown pop-up), and the demo's closing table reads
OBSERVED, EXPECTED, N = "observed", "expected", "n"


def check_result(*, passed: bool, observed, expected: str, n=None, metadata: dict | None = None,
                 severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
                 check_name: str | None = None) -> dg.AssetCheckResult:
    """The one way a halo check reports: what it observed, what it expected, on how many samples (None:
    no count applies), then its details; metadata tidied for the UI."""
    verdict = {OBSERVED: number(observed) if not isinstance(observed, str) else dg.MetadataValue.text(observed),
               EXPECTED: dg.MetadataValue.text(expected),
               **({N: number(n)} if n is not None else {})}
    return dg.AssetCheckResult(passed=passed, severity=severity, check_name=check_name,
                               metadata={**verdict, **tidy(metadata)})


def criterion_result(criterion, metadata: dict | None = None,
                     severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR) -> dg.AssetCheckResult:
    """A go/no-go criterion (halo_core.evaluation.promotion.Criterion) as a check result. One the data cannot
    measure fails as WARN: failing it as ERROR would block promotion on absent evidence, passing it would
    claim a result nobody saw; Dagster blocks only on ERROR, the alert sensor still reports it."""
    if not criterion.measurable:
        severity, metadata = dg.AssetCheckSeverity.WARN, {"measurable": False, "reason": criterion.reason,
                                                          **(metadata or {})}
    return check_result(passed=criterion.passed, observed=criterion.observed, expected=criterion.expected,
                        n=criterion.n, metadata=metadata, severity=severity)


def records(rows: list[dict]) -> dg.TableMetadataValue:
    """Rows as the UI's own table (sortable columns), every row with the same keys."""
    rows = [{k: cell(v) for k, v in r.items()} for r in rows]
    kinds = {bool: "bool", int: "int", float: "float"}
    columns = [dg.TableColumn(k, kinds.get(type(v), "string")) for k, v in rows[0].items()] if rows else []
    return dg.MetadataValue.table(records=[dg.TableRecord(r) for r in rows], schema=dg.TableSchema(columns=columns))


def other_calibration(cal) -> dict:
    """The calibration not in use and its test ECE, under stable keys so the UI plots them across runs
    whichever calibration is in use."""
    return {"other_calibration": dg.MetadataValue.text(cal.alternative.method),
            "ece_after_other_calibration": number(cal.alternative.ece_after.ece)}


def dataset_metadata(report) -> dict:
    splits = report.splits
    return {
        "uri": dg.MetadataValue.path(report.out_dir),
        "rows_kept": table([{"split": s, "rows_in": r.rows_in, "rows_kept": r.rows_kept,
                             **{f"dropped_{k}": v for k, v in sorted(r.counts.items())}} for s, r in splits.items()]),
        "quarantined": table([{k: q[k] for k in ("task_id", "reason", "source")}
                              for r in splits.values() for q in r.quarantined][:50]),
        "split_integrity_ok": dg.MetadataValue.bool(report.integrity.ok),
        "data_fingerprint": dg.MetadataValue.text(report.data_fingerprint),
        "seconds": dg.MetadataValue.float(report.seconds),
    }


def history_row(record) -> dict:
    """One epoch of the trainer's record as flat columns (the per-class val accuracy is nested there)."""
    h = record.to_dict()
    flat = {"epoch": h["epoch"] + 1, **{k: v for k, v in h.items() if k not in ("epoch", "val_per_class_accuracy")}}
    for name, acc in h["val_per_class_accuracy"].items():
        if isinstance(acc, dict):
            flat[f"val_accuracy_{name}"] = acc["accuracy"]
    return flat


def training_metadata(result) -> dict:
    return {
        "model_path": dg.MetadataValue.path(result.model_path),
        "best_epoch": dg.MetadataValue.int(result.best_epoch + 1),
        "epochs_run": dg.MetadataValue.int(len(result.history)),
        "stopped_early": dg.MetadataValue.bool(result.stopped_early),
        "val_auroc": number(result.history[-1].val_auroc),
        "val_loss": number(result.history[-1].val_loss),
        "history": records([history_row(h) for h in result.history]),
        "samples": table([{"split": s, **c} for s, c in result.samples.items()]),
        "seconds": number(result.seconds),
        "reused": dg.MetadataValue.bool(result.reused),
    }


def comparison_metadata(comparison) -> dict:
    """Champion / challenger: both models' numbers on the same test split, or why none were compared."""
    if comparison.skipped:
        return {"comparison": dg.MetadataValue.text(comparison.skipped)}
    return {
        "comparison": table([{"metric": name, **{k: round(v, 4) if isinstance(v, float) else v
                                                 for k, v in asdict(row).items()}}
                             for name, row in comparison.metrics.items()]),
        **{f"{who}_{name}": number(getattr(row, who)) for name, row in comparison.metrics.items()
           for who in ("production", "challenger")},
        "n_test": dg.MetadataValue.int(comparison.n_test),
        "not_compared": dg.MetadataValue.text("; ".join(comparison.not_compared) or "none"),
    }


def image(thumbnail: bytes, alt: str, thumbnail_url: str | None, url: str | None) -> dg.MarkdownMetadataValue:
    """A plot's thumbnail, linking to the plot: a markdown image of its served URL is short, and the UI
    renders short markdown inline on the asset page; without a server, the PNG itself as a data URI
    (the UI shows that in a pop-up)."""
    if thumbnail_url and url:
        return dg.MetadataValue.md(f"[![{alt}]({thumbnail_url})]({url})")
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(thumbnail).decode()})")


def _bins(rows: list) -> dg.MarkdownMetadataValue:
    return table([{"bin": bin_label(b.lo, b.hi), "n": b.n, "completeness": b.completeness, "ci95_lo": b.ci95[0],
                   "ci95_hi": b.ci95[1], "auroc": b.auroc, "n_negatives": b.n_negatives} for b in rows])


def report_metadata(report: EvaluationReport, html_path: str, thumbnails: dict[str, bytes],
                    link: Callable[[str], str | None] = lambda relative: None) -> dict:
    """``thumbnails``: each key plot's thumbnail PNG by name; ``link(relative path under the report
    folder)`` is its browser URL, or None when nothing serves it."""
    m = report.metrics
    cal = report.calibration
    named = [k for k, v in m.items() if k not in ("n", "n_positives", "n_negatives") and not isinstance(v, (dict, list))]
    html_url = link(REPORT_HTML)
    return {
        "report_html": dg.MetadataValue.url(html_url) if html_url else dg.MetadataValue.path(html_path),
        "model_sha256": dg.MetadataValue.text(report.model_sha256),
        "trained_on_data": dg.MetadataValue.text(report.model_data_fingerprint),
        "evaluated_on_data": dg.MetadataValue.text(report.data_fingerprint),
        "n_test": dg.MetadataValue.int(m["n"]),
        # each metric as its own number, so the UI plots it across runs; the table gives its n beside it
        **{name: number(m[name]) for name in named},
        "metrics": table([{"metric": name, "value": m[name], "n": m["n"], "n_lenses": m["n_positives"],
                           "n_non_lenses": m["n_negatives"]} for name in named]),
        "tpr_at_fpr": table([{"fpr": t["fpr"], "tpr": t["tpr"] if t["measurable"] else None,
                              "threshold": t["threshold"], "precision_at_prevalence": t["precision_at_prevalence"],
                              "n_negatives": t["n_negatives"], "n_distinct_negatives": t["n_distinct_negatives"]}
                             for t in m["tpr_at_fpr"]]),
        "ece_before_calibration": number(cal.ece_before.ece),
        "ece_after_calibration": number(cal.ece_after.ece),
        "calibration": dg.MetadataValue.text(cal.method),
        **other_calibration(cal),
        "theta_e_bins": _bins(report.theta_e_bins),
        "psf_fwhm_bins": _bins(report.psf_fwhm_bins),
        "arc_snr_bins": _bins(report.arc_snr_bins),
        **{f"plot_{name}": image(thumbnails[name], name, link(thumbnail_path(name)), link(report.plots[name]))
           for name in KEY_PLOTS},
    }


def gates_metadata(gates) -> dict:
    probes, null = gates.probes, gates.selection_null
    return {
        "gates": table([{"gate": g.gate, "auc": round(g.auc, 4), "ci95": [round(v, 4) for v in g.ci95], "n": g.n,
                         "n_features": g.n_features, "threshold": g.threshold, "passed": g.passed}
                        for g in probes.values()]),
        **{f"{name}_auc": number(g.auc) for name, g in probes.items()},
        "strata": table([{"gate": g.gate, **asdict(s)} for g in probes.values() for s in g.strata]),
        "selection_null_max_auc": number(null.max_auc),
        "selection_null_informative": null.informative,
        "deployable": gates.deployable,
    }
