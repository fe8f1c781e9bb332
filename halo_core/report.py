"""The evaluation report: held-out test metrics, calibration, diagnostics; JSON + one self-contained HTML."""

from __future__ import annotations

import base64
import html
import io
import json

import matplotlib

matplotlib.use("Agg")  # headless: reports are written on servers and in CI
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import roc_curve

from halo_core import uris
from halo_core.calibration import Calibration, expected_calibration_error
from halo_core.checkpoint import load_model, model_spec
from halo_core.config import HaloConfig
from halo_core.diagnostics import THETA_E_BINS_ARCSEC, arc_snr_zero_behaviour, binned_completeness, per_brick_auroc
from halo_core.metrics import classification_metrics
from halo_core.model import pick_device
from halo_core.monitors import monitor_report, progress_summaries
from halo_core.samples import STAMP, SampleSet
from halo_core.shards import dataset_spec
from halo_core.train import load_split_samples, predict_logits

REPORT_JSON, REPORT_HTML = "report.json", "report.html"


def roc_png(labels: np.ndarray, probs: np.ndarray, title: str) -> bytes:
    fpr, tpr, _ = roc_curve(labels, probs)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot(np.maximum(fpr, 1e-5), tpr, lw=1.5)
    ax.set_xscale("log")
    ax.set_xlim(1e-4, 1)
    ax.set(xlabel="false-positive rate", ylabel="true-positive rate (completeness)", title=title)
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def evaluate(cfg: HaloConfig, dataset_dir: str, model_path: str, calibration: Calibration, out_dir: str) -> dict:
    """Score the test split with the trained, calibrated model and write report.json + report.html."""
    model, sidecar = load_model(model_path)
    dataset_spec(dataset_dir).require_same(model_spec(sidecar), f"{model_path} vs {dataset_dir}")
    device = pick_device(cfg.device)
    model = model.to(device)
    shards, samples = load_split_samples(cfg, dataset_dir, "test")
    logits = predict_logits(model, shards, samples, cfg.batch_size, device)
    probs = calibration.probability(logits)
    raw = 1 / (1 + np.exp(-logits.astype(np.float64)))
    labels = samples.labels.astype(int)
    meta = shards.meta.iloc[samples.rows].reset_index(drop=True)
    pos = labels == 1

    masked_rows = np.flatnonzero(shards.meta["arc_snr"].to_numpy(dtype=float) == 0)
    masked = SampleSet(masked_rows, np.full(len(masked_rows), STAMP, np.int8),
                       np.zeros(len(masked_rows), np.float32), samples.with_control)
    masked_probs = calibration.probability(predict_logits(model, shards, masked, cfg.batch_size, device))

    report = {
        "split": "test",
        "model": model_path,
        "config_hash": cfg.config_hash(),
        "model_config_hash": sidecar["config_hash"],
        "needs_control": sidecar["needs_control"],
        "sample_construction": cfg.sample_construction,
        "metrics": classification_metrics(labels, probs),
        "calibration": {
            **calibration.to_dict(),
            "ece_before": expected_calibration_error(raw, labels),
            "ece_after": expected_calibration_error(probs, labels),
        },
        "deployment_prevalence": cfg.deployment_prevalence,
        "arc_snr_zero": arc_snr_zero_behaviour(masked_probs),
        "per_brick": per_brick_auroc(meta, labels, probs),
        "theta_e_completeness": binned_completeness(
            meta["theta_e_arcsec"].to_numpy()[pos], probs[pos], THETA_E_BINS_ARCSEC),
        "training": {"best_epoch": sidecar["best_epoch"], "history": sidecar["history"],
                     "progress": progress_summaries(sidecar["history"])},
        "monitors": monitor_report(sidecar["history"], cfg, sidecar["best_epoch"]),
    }
    uris.atomic_write_json(uris.join(out_dir, REPORT_JSON), report)
    uris.atomic_write_bytes(uris.join(out_dir, REPORT_HTML), render_html(report, roc_png(labels, probs, "test ROC")).encode())
    return report


def _fmt(v, digits: int = 4, missing: str = "n/a") -> str:
    return missing if v is None or v != v else f"{v:.{digits}f}"  # v != v: NaN


def render_html(report: dict, roc: bytes) -> str:
    m = report["metrics"]
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>"
        for k, v in m.items() if isinstance(v, float) or v is None
    )
    tpr = "".join(
        f"<tr><td>TPR at FPR {t['fpr']:g}</td><td>{_fmt(t['tpr'], missing='not measurable')}"
        f" (n_neg={t['n_negatives']})</td></tr>" for t in m["tpr_at_fpr"]
    )
    cal = report["calibration"]
    theta = "".join(
        f"<tr><td>{b['lo']:g}-{b['hi']:g}\"</td><td>{b['n']}</td><td>{_fmt(b['completeness'], 3)} "
        f"[{_fmt(b['ci95'][0], 3)}, {_fmt(b['ci95'][1], 3)}]</td></tr>"
        for b in report["theta_e_completeness"]
    )
    img = base64.b64encode(roc).decode()
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>halo evaluation report</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}td,th{{padding:2px 10px;border-bottom:1px solid #ddd}}</style>
</head><body><h1>halo evaluation report</h1>
<p>Test split: n={m['n']} ({m['n_positives']} positives, {m['n_negatives']} negatives);
sample construction <code>{html.escape(report['sample_construction'])}</code>;
model needs a control stamp: <b>{report['needs_control']}</b>; config {report['config_hash']}.</p>
<h2>Metrics (calibrated probabilities)</h2><table>{rows}{tpr}</table>
<h2>Calibration (Platt on val, n={cal['n_fit']})</h2>
<p>ECE (equal-mass, test): before {cal['ece_before']['ece']:.4f}, after {cal['ece_after']['ece']:.4f}</p>
<h2>Completeness by theta_E (threshold 0.5, Wilson 95 %)</h2><table><tr><th>theta_E</th><th>n</th><th>completeness</th></tr>{theta}</table>
<h2>Masked arcs (arc_snr == 0)</h2><p>n={report['arc_snr_zero']['n']}, scored as lens: {report['arc_snr_zero']['accuracy_as_lens']}</p>
<h2>ROC</h2><img alt="ROC curve" src="data:image/png;base64,{img}">
<h2>Raw JSON</h2><pre>{html.escape(json.dumps(report['metrics'], indent=1))}</pre>
</body></html>"""
