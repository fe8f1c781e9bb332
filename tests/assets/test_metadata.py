"""What a person reads in the UI: rounded numbers with their n, "not measurable" in words, the
training history as a real table, plots as short markdown the asset page renders inline."""

import math

import dagster as dg

from halo_assets.metadata import check_result, history_row, image, number, records, report_metadata, table
from halo_core.evaluation.report import KEY_PLOTS
from halo_core.training.monitors import EpochRecord


def test_numbers_are_rounded_and_unmeasured_ones_say_so():
    assert number(0.9902138765448598).value == 0.9902
    assert number(1.234567e-6).value == 1.235e-6  # significant digits: a small LR keeps its value
    assert number(math.nan).value == "not measurable" and number(None).value == "not measurable"
    assert "nan" not in table([{"tpr": math.nan, "n": 3}]).value
    result = check_result(passed=False, observed=0.91234567, expected=">= 0.97", n=12, metadata={"tpr": None})
    assert result.metadata["observed"].value == 0.9123 and result.metadata["tpr"].value == "not measurable"
    assert result.metadata["n"].value == 12 and result.metadata["expected"].value == ">= 0.97"
    # the verdict's three entries come first: the UI lists metadata in order
    assert list(result.metadata)[:3] == ["observed", "expected", "n"]


def test_history_is_a_table_of_flat_columns():
    h = EpochRecord(epoch=0, lr=1e-3, train_loss=0.69314718, grad_norm_max=2.0, grad_norm_p99=1.5, samples_per_s=80.0,
                    data_wait_share=0.1, samples_seen=64, val_loss=0.7, val_auroc=math.nan,
                    val_per_class_accuracy={"non_lens": {"n": 4, "accuracy": 0.5}, "lens": {"n": 4, "accuracy": 0.25},
                                            "passed": True})
    value = records([history_row(h)])
    assert isinstance(value, dg.TableMetadataValue)
    row = value.records[0].data
    assert row["epoch"] == 1 and row["train_loss"] == 0.6931 and row["val_accuracy_lens"] == 0.25
    assert row["val_auroc"] == "not measurable" and "val_per_class_accuracy" not in row


def test_a_served_plot_is_short_markdown_showing_its_thumbnail_linking_the_png():
    base = "http://127.0.0.1:3001/demo/evaluation_report/plots"
    served = image(b"\x89PNG", "roc", f"{base}/thumbnails/roc.png", f"{base}/roc.png")
    assert len(served.value) < 1000  # the UI renders markdown under 1,000 characters inline
    assert served.value == f"[![roc]({base}/thumbnails/roc.png)]({base}/roc.png)"
    assert image(b"\x89PNG", "roc", None, None).value.startswith("![roc](data:image/png;base64,")


def test_report_metadata_links_the_report_and_gives_each_metric_its_n(evaluated):
    _, report = evaluated
    m = report.metrics
    assert not report.tpr_at(1e-3)["measurable"]  # the smoke test split has far fewer than 1000 non-lenses
    thumbnails = {n: b"png" for n in KEY_PLOTS}
    md = report_metadata(report, "/r/report.html", thumbnails,
                         lambda rel: f"http://127.0.0.1:1/p/evaluation_report/{rel}")
    assert md["report_html"].value == "http://127.0.0.1:1/p/evaluation_report/report.html"
    assert isinstance(md["report_html"], dg.UrlMetadataValue)
    assert md["auroc"].value == float(f"{m['auroc']:.4g}") and md["n_test"].value == m["n"]
    assert "| auroc " in md["metrics"].value and f"|  {m['n']} |" in md["metrics"].value
    assert "not measurable" in md["tpr_at_fpr"].value and "nan" not in md["tpr_at_fpr"].value
    assert "(http://127.0.0.1:1/p/evaluation_report/plots/thumbnails/roc.png)" in md["plot_roc"].value
    assert md["plot_roc"].value.endswith("(http://127.0.0.1:1/p/evaluation_report/plots/roc.png)")
    assert {k for k in md if k.startswith("plot_")} == {f"plot_{n}" for n in KEY_PLOTS}
    unserved = report_metadata(report, "/r/report.html", thumbnails)
    assert isinstance(unserved["report_html"], dg.PathMetadataValue)
