"""Real-galaxy validation, the realism probe and the plan's Q7 substitutes, on the smoke model and the
six real DR10 fixtures (lens candidates, n = 6: mechanics, not science)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from halo_core.cli import main
from halo_core.data.samples import SampleSet, build_samples
from halo_core.data.shards import open_split
from halo_core.evaluation.calibration import Calibration
from halo_core.evaluation.control_substitutes import median_template, substitute_scores
from halo_core.evaluation.results import ValidationReport
from halo_core.evaluation.validation import (
    STANDIN_LABEL,
    VALIDATION_HTML,
    VALIDATION_JSON,
    logits_and_features,
    realism_probe,
    validate_real,
)
from halo_core.metrics import wilson_interval
from halo_core.model.checkpoint import load_model
from halo_core.model.engine import Engine
from halo_core.model.inference import predict_logits
from halo_core.model.network import build_model
from halo_core.records import from_json
from halo_core.survey.scoring import score

CAL = Calibration(a=0.8, b=-0.3, train_prevalence=0.5, n_fit=100)


def _points(threshold: float) -> list[dict]:
    """Synthetic-test operating points: FPR 1e-2 measurable at ``threshold``, the others not."""
    return [{"fpr": f, "tpr": 0.9 if f == 1e-2 else None, "threshold": threshold if f == 1e-2 else None,
             "measurable": f == 1e-2, "n_negatives": 500, "n_distinct_negatives": 500} for f in (1e-2, 1e-3, 1e-4)]


def test_features_are_the_input_of_the_final_layer(trained):
    model, _ = load_model(trained.model_path)
    x = np.random.default_rng(0).normal(size=(5, 3, 64, 64)).astype(np.float32)
    logits, features = logits_and_features(Engine(model, "fp32", batch_size=2, channels_last=False), x)
    assert features.shape == (5, 512)
    with torch.no_grad():
        assert np.allclose(logits, model(torch.from_numpy(x)).squeeze(1).numpy(), atol=1e-5)
        assert np.allclose(model.fc(torch.from_numpy(features).float()).squeeze(1).numpy(), logits, atol=1e-5)


def test_realism_probe_separates_unlike_features_and_not_like_ones():
    rng = np.random.default_rng(0)
    injected, groups = rng.normal(size=(200, 16)), np.repeat(np.arange(50), 4).astype(str)
    unlike = realism_probe(injected, groups, rng.normal(2.0, 1.0, (6, 16)), np.arange(6), folds=5, min_real=20,
                           max_auc=0.9)
    assert unlike.auc > 0.95 and not unlike.passed and not unlike.measurable
    assert "not measurable" in unlike.status and unlike.n_real == 6 and unlike.ci95[0] > 0.9
    like = realism_probe(injected, groups, rng.normal(size=(60, 16)), np.arange(60), folds=5, min_real=20,
                         max_auc=0.9)
    assert like.measurable and like.passed and like.auc < 0.75 and like.ci95[1] < unlike.ci95[0]


def test_recall_on_real_lenses_is_counted_at_the_synthetic_threshold(trained, fixtures, tmp_path):
    probs = score(trained.model_path, sorted(str(p) for p in Path(fixtures).glob("*.npz")), calibration=CAL)
    threshold = float(np.median(probs["probability"]))  # splits the six, so the count is not trivial
    report = validate_real(trained.model_path, CAL, _points(threshold), fixtures, "", str(tmp_path), operating_fpr=1e-2,
                           prevalence=1e-3, radius_arcsec=2.0, purity_target=0.75)
    operating = report.operating
    k = int((probs["probability"] >= threshold).sum())
    assert operating.recall.n == 6 and operating.recall.k == k
    assert operating.recall.ci95 == wilson_interval(k, 6)
    assert [p.recall for p in report.operating_points[1:]] == [None, None]  # not measurable: not made up
    # no real non-lenses here: the labelled sky stand-ins, four per cutout
    assert report.nonlenses_are_standins and report.nonlenses_label == STANDIN_LABEL
    assert operating.fpr_real.n == 24 and report.known_lens_matches == {"lenses": 6, "nonlenses": 0}
    # validation.json is the report, and reads back as it
    assert from_json(ValidationReport, json.loads((tmp_path / VALIDATION_JSON).read_text())) == report
    assert report.operating_threshold == threshold and STANDIN_LABEL in (tmp_path / VALIDATION_HTML).read_text()
    assert all((tmp_path / p).stat().st_size > 1000 for p in report.plots.values())


def test_halo_validate_takes_thresholds_from_a_report(trained, evaluated, fixtures, tmp_path, capsys):
    report = evaluated[1]
    (tmp_path / "report.json").write_text(json.dumps({**report.to_dict(), "metrics": {"tpr_at_fpr": _points(0.5)}}))
    (tmp_path / "cal.json").write_text(json.dumps(CAL.to_dict()))
    assert main(["validate", "--preset", "smoke", "--model", trained.model_path, "--lenses", fixtures,
                 "--report", str(tmp_path / "report.json"), "--calibration", str(tmp_path / "cal.json"),
                 "--out", str(tmp_path / "v")]) == 0
    out = capsys.readouterr().out
    assert "6 real lenses, 24 STAND-IN" in out and "FPR 0.01 (operating): threshold 0.5000" in out
    assert "FPR 0.001: not measurable" in out and (tmp_path / "v" / VALIDATION_HTML).is_file()
    # without test metrics anywhere there is no threshold to use: a clear error, exit 2
    assert main(["validate", "--model", trained.model_path, "--lenses", fixtures, "--out", str(tmp_path / "w")]) == 2


def test_q7_substitutes_score_the_test_split_without_the_true_control(filtered_dir):
    torch.manual_seed(0)
    model = build_model("resnet18", 6).eval()
    test, train = open_split(filtered_dir, "test"), open_split(filtered_dir, "train")
    every = build_samples(test.meta, "paired_6ch", 0)
    keep = np.r_[0:12, len(every) - 12:len(every)]  # 12 lenses (stamp, ctrl) and 12 non-lenses (ctrl, ctrl)
    samples = SampleSet(every.rows[keep], every.slots[keep], every.labels[keep], True)
    template = median_template(train)
    assert template.shape == (3, 64, 64)
    logits = substitute_scores(Engine(model, "fp32", batch_size=16, channels_last=False), test, samples, template)
    reference = predict_logits(model, test, samples, 16, torch.device("cpu"), "fp32", channels_last=False)
    assert np.allclose(logits["true_control"], reference, atol=1e-4)
    neg = samples.labels == 0  # (ctrl, ctrl): duplicating the image is the true control for a negative
    assert np.allclose(logits["duplicated_image"][neg], logits["true_control"][neg], atol=1e-5)
    assert not np.allclose(logits["duplicated_image"][~neg], logits["true_control"][~neg], atol=1e-3)
    assert not np.allclose(logits["median_template"], logits["true_control"], atol=1e-3)


def test_a_cutout_with_a_nan_core_is_refused_never_filled_with_zeros_and_counted(trained, fixtures, tmp_path):
    """M5: validate filled NaN pixels with zeros and counted such cutouts as lenses."""
    import shutil

    folder = tmp_path / "lenses"
    shutil.copytree(fixtures, folder)
    with np.load(folder / "0001m040_4091.npz") as npz:
        members = dict(npz)
    members["cutout"] = members["cutout"].copy()
    members["cutout"][45:55, 45:55, :] = np.nan  # the whole core: nothing there to score
    np.savez(folder / "0001m040_4091.npz", **members)
    report = validate_real(trained.model_path, CAL, _points(0.5), str(folder), "", str(tmp_path / "out"),
                           operating_fpr=1e-2, prevalence=1e-3, radius_arcsec=2.0, purity_target=0.75)
    assert report.n_lenses == 5 and report.refused == {"nonfinite_core": 1}
    assert "0001m040_4091" not in {s.galaxy_id for s in report.scores["lenses"]}
