import io
import logging

from halo_core.progress import Progress


def test_a_terminal_gets_a_bar_with_rate_and_eta():
    out = io.StringIO()
    with Progress(100, "halo score", "cutouts", stream=out, terminal=True) as bar:
        for _ in range(4):
            bar.update(25)
    text = out.getvalue()
    assert "\r[" in text and "100/100 cutouts (100%)" in text and "cutouts/s" in text and "ETA" in text
    assert text.endswith("\n")


def test_a_log_gets_one_line_per_tenth(caplog):
    with caplog.at_level(logging.INFO, logger="halo_core.progress"):
        with Progress(1000, "halo catalog", "cutouts", stream=io.StringIO(), terminal=False) as bar:
            for _ in range(100):
                bar.update(10)
    lines = [r.getMessage() for r in caplog.records if r.name == "halo_core.progress"]
    assert len(lines) == 10 and lines[0].startswith("halo catalog: 100/1,000 cutouts (10%)")
    assert "1,000/1,000" in lines[-1]


def test_an_unknown_total_counts_without_a_share():
    out = io.StringIO()
    with Progress(None, "halo catalog", "cutouts", stream=out, terminal=True) as bar:
        bar.update(7)
    assert "7 cutouts" in out.getvalue() and "%" not in out.getvalue()
