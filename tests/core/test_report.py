import json
import re
from dataclasses import fields

import matplotlib.pyplot as plt
import numpy as np
import pytest

from halo_core.evaluation.calibration import ValidationFit, calibrate_on_val
from halo_core.evaluation.report import KEY_PLOTS, REPORT_HTML, REPORT_JSON, evaluate, thumbnail_path
from halo_core.evaluation.results import EvaluationReport
from halo_core.reports.figures import MAX_PLOT_WIDTH_PX, THUMBNAIL_WIDTH_PX, asinh_rgb, gallery_png, png
from halo_core.reports.markup import bin_label
from tests.factories import png_size


def test_report_html_is_one_file_with_every_plot_embedded(evaluated):
    out, report = evaluated
    page = (out / REPORT_HTML).read_text()
    assert page.count("data:image/png;base64,") == len(report.plots) == 11
    # self-contained: every src/href is a data URI, nothing to fetch beside the file
    assert all(ref.startswith("data:") for ref in re.findall(r'(?:src|href)="([^"]*)"', page))
    assert all((out / path).read_bytes().startswith(b"\x89PNG") for path in report.plots.values())


def test_every_plot_is_one_figure_that_fits_and_each_key_plot_has_a_thumbnail(evaluated):
    out, report = evaluated
    written = sorted((out / "plots").rglob("*.png"))
    assert len(written) == len(report.plots) + len(KEY_PLOTS)  # nothing else: the old multi-panel names are gone
    assert all(png_size(p.read_bytes())[0] <= MAX_PLOT_WIDTH_PX for p in written)
    assert set(KEY_PLOTS) <= set(report.plots)
    assert all(png_size((out / thumbnail_path(n)).read_bytes())[0] == THUMBNAIL_WIDTH_PX for n in KEY_PLOTS)


def test_a_plot_wider_than_the_limit_is_refused_and_a_stamp_gallery_wraps():
    fig, _ = plt.subplots(figsize=(11, 3.2))
    with pytest.raises(ValueError, match=f"at most {MAX_PLOT_WIDTH_PX} px"):
        png(fig)
    plt.close(fig)
    stamp = np.zeros((3, 8, 8), np.float32)
    width, height = png_size(gallery_png([[(stamp, "a")] * 8, [(stamp, "b")] * 3]))
    assert width <= MAX_PLOT_WIDTH_PX and height == round(3 * 1.9 * 90)  # 4 per row: 2 rows + 1 row


def test_report_json_carries_the_diagnostics_with_counts(evaluated):
    out, report = evaluated
    on_disk = json.loads((out / REPORT_JSON).read_text())
    n_pos = on_disk["metrics"]["n_positives"]
    for key in ("theta_e_bins", "psf_fwhm_bins", "arc_snr_bins"):
        assert sum(b["n"] for b in on_disk[key]) == n_pos, key  # every test lens lands in one bin
    assert on_disk["arc_snr_bins"][-1]["hi"] is None  # the open bin: inf is not JSON
    assert all("precision_at_prevalence" in p for p in on_disk["metrics"]["tpr_at_fpr"])
    temperature = on_disk["calibration"]["alternative"]
    assert temperature["method"] == "temperature" and temperature["b"] == 0.0
    assert temperature["a"] > 0 and temperature["ece_after"]["n"] == on_disk["metrics"]["n"]
    assert on_disk["calibration"]["method"] == "platt"
    # report.json is the typed record and nothing else: every field written, read back by attribute
    assert sorted(on_disk) == sorted(f.name for f in fields(EvaluationReport))
    assert EvaluationReport.from_dict(on_disk).model_sha256 == report.model_sha256


def test_asinh_rgb_maps_a_stamp_to_a_colour_image():
    stamp = np.zeros((3, 8, 8), np.float16)
    stamp[2, 4, 4] = 20.0  # a bright z-band pixel shows up red
    rgb = asinh_rgb(stamp)
    assert rgb.shape == (8, 8, 3) and rgb.min() >= 0 and rgb.max() <= 1
    assert rgb[4, 4, 0] == 1.0 and rgb[4, 4, 2] == 0.0


def test_bin_labels_name_the_open_bin():
    assert bin_label(20.0, None) == "20+" and bin_label(20.0, float("inf")) == "20+"
    assert bin_label(0.75, 1.0) == "0.75-1"


def test_temperature_scaling_can_be_the_calibration_in_use(tmp_path, smoke_cfg, filtered_dir, trained):
    cfg = smoke_cfg.model_copy(update={"calibration": "temperature"})
    assert cfg.training_hash() == smoke_cfg.training_hash()  # re-evaluates the model, never retrains it
    fit = calibrate_on_val(cfg, filtered_dir, trained.model_path)
    assert fit.chosen.method == "temperature" and fit.chosen.b == 0.0 and fit.val_ece["after"] >= 0
    assert fit.alternative.method == "platt" and ValidationFit.from_dict(fit.to_dict()) == fit
    report = evaluate(cfg, filtered_dir, trained.model_path, fit, str(tmp_path))
    assert report.calibration.method == "temperature" and report.calibration.alternative.method == "platt"
    assert EvaluationReport.read(str(tmp_path / "report.json")).calibration == report.calibration
    assert "temperature (T=" in (tmp_path / REPORT_HTML).read_text()


def test_an_interrupted_evaluate_leaves_the_previous_report_intact(evaluated, smoke_cfg, filtered_dir, trained,
                                                                  monkeypatch):
    import halo_core.evaluation.report

    out, _ = evaluated
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C (or a kill) halfway through the measurements

    monkeypatch.setattr(halo_core.evaluation.report, "shortcut_diagnostics", interrupted)
    fit = calibrate_on_val(smoke_cfg, filtered_dir, trained.model_path)
    with pytest.raises(KeyboardInterrupt):
        evaluate(smoke_cfg, filtered_dir, trained.model_path, fit, str(out))
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_report_html_opens_with_the_verdict_and_what_failed(evaluated, smoke_cfg):
    """The first thing on the page: GO / NO-GO, each failed criterion with its value, limit and n, the
    profile, the run and the model; the same judgement promotion makes (promotion.report_verdict)."""
    from halo_core.evaluation.promotion import report_verdict
    from halo_core.evaluation.report import ReportContext
    from halo_core.reports.evaluation import verdict_banner

    out, report = evaluated
    page = (out / REPORT_HTML).read_text()
    body = page.split("<body>", 1)[1]
    verdict = report_verdict(smoke_cfg, report, None)
    assert body.startswith('<div class="verdict ' + ("go" if verdict.go else "nogo"))
    assert "profile <b>not given</b>" in body and "outside Dagster" in body  # evaluate() called bare
    assert report.model_sha256[:12] in body.split("</div>", 1)[0]
    # without gates.json the selection null is listed as not measured, never as passed
    assert "selection_null" in body.split("</div>", 1)[0] and "not measured on this data yet" in body
    banner = verdict_banner(verdict, report, ReportContext("smoke", "run-42"))
    assert "profile <b>smoke</b>" in banner and "run-42" in banner
    for c in verdict.criteria.values():
        if c.blocks:  # a failed criterion shows its observed value and its limit
            assert f"<b>{c.name}</b>: " in banner and f"expected {c.expected}" in banner.replace("&gt;", ">").replace(
                "&lt;", "<"), c.name
    assert ("NO-GO: not promoted" in banner) == (not verdict.go)
