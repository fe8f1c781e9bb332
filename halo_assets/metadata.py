"""halo_core reports -> Dagster metadata; the only place that knows both vocabularies."""

from __future__ import annotations

import base64
import math

import dagster as dg
import pandas as pd

from halo_core.report import bin_label


def table(rows: list[dict]) -> dg.MarkdownMetadataValue:
    return dg.MetadataValue.md(pd.DataFrame(rows).to_markdown(index=False) if rows else "_none_")


def number(value) -> dg.MetadataValue:
    """A float, or the text 'n/a' for a value that could not be measured (never a fake 0)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return dg.MetadataValue.text("n/a")
    return dg.MetadataValue.float(float(value)) if isinstance(value, float) else dg.MetadataValue.int(int(value))


def other_calibration(cal: dict) -> dict:
    """The calibration not in use and its test ECE, under stable keys so the UI plots them across runs
    whichever calibration is in use."""
    return {"other_calibration": dg.MetadataValue.text(cal["alternative"]["method"]),
            "ece_after_other_calibration": number(cal["alternative"]["ece_after"]["ece"])}


def dataset_metadata(report) -> dict:
    splits = report.splits
    return {
        "uri": dg.MetadataValue.path(report.out_dir),
        "rows_kept": table([{"split": s, "rows_in": r.rows_in, "rows_kept": r.rows_kept,
                             **{f"dropped_{k}": v for k, v in sorted(r.counts.items())}} for s, r in splits.items()]),
        "quarantined": table([{k: q[k] for k in ("task_id", "reason", "source")}
                              for r in splits.values() for q in r.quarantined][:50]),
        "split_integrity_ok": dg.MetadataValue.bool(report.integrity.ok),
        "seconds": dg.MetadataValue.float(report.seconds),
    }


def training_metadata(result) -> dict:
    last = result.history[-1]
    return {
        "model_path": dg.MetadataValue.path(result.model_path),
        "best_epoch": dg.MetadataValue.int(result.best_epoch + 1),
        "epochs_run": dg.MetadataValue.int(len(result.history)),
        "stopped_early": dg.MetadataValue.bool(result.stopped_early),
        "val_auroc": number(last["val_auroc"]),
        "val_loss": number(last["val_loss"]),
        "history": table([{k: round(v, 5) if isinstance(v, float) else v for k, v in h.items()} for h in result.history]),
        "samples": table([{"split": s, **c} for s, c in result.samples.items()]),
        "seconds": dg.MetadataValue.float(result.seconds),
    }


# the plots a reviewer needs in the Dagster UI without opening report.html
KEY_PLOTS = ("roc", "reliability", "completeness", "training_curves")


def image(png: bytes, alt: str) -> dg.MarkdownMetadataValue:
    """A PNG inline in markdown: the Dagster UI renders data-URI images."""
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def _bins(rows: list[dict]) -> dg.MarkdownMetadataValue:
    return table([{"bin": bin_label(b), "n": b["n"], "completeness": b["completeness"],
                   "ci95_lo": b["ci95"][0], "ci95_hi": b["ci95"][1], "auroc": b["auroc"],
                   "n_negatives": b["n_negatives"]} for b in rows])


def report_metadata(report: dict, html_path: str, plots: dict[str, bytes]) -> dict:
    m = report["metrics"]
    cal = report["calibration"]
    return {
        "report_html": dg.MetadataValue.path(html_path),
        "n_test": dg.MetadataValue.int(m["n"]),
        "auroc": number(m["auroc"]),
        "auprc": number(m["auprc"]),
        "precision_at_recall_0_90": number(m["precision_at_recall_0_90"]),
        "tpr_at_fpr": table(m["tpr_at_fpr"]),
        "ece_before_calibration": number(cal["ece_before"]["ece"]),
        "ece_after_calibration": number(cal["ece_after"]["ece"]),
        "calibration": dg.MetadataValue.text(cal["method"]),
        **other_calibration(cal),
        "theta_e_bins": _bins(report["theta_e_bins"]),
        "psf_fwhm_bins": _bins(report["psf_fwhm_bins"]),
        "arc_snr_bins": _bins(report["arc_snr_bins"]),
        **{f"plot_{name}": image(plots[name], name) for name in KEY_PLOTS},
    }


def gates_metadata(gates) -> dict:
    probes, null = gates.probes, gates.selection_null
    return {
        "gates": table([{"gate": g.gate, "auc": round(g.auc, 4), "ci95": [round(v, 4) for v in g.ci95], "n": g.n,
                         "n_features": g.n_features, "threshold": g.threshold, "passed": g.passed}
                        for g in probes.values()]),
        **{f"{name}_auc": number(g.auc) for name, g in probes.items()},
        "strata": table([{"gate": g.gate, **s} for g in probes.values() for s in g.strata]),
        "selection_null_max_auc": number(null.max_auc),
        "selection_null_informative": null.informative,
        "deployable": gates.deployable,
    }
