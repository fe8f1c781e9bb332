"""Inspection gallery: one self-contained HTML page of the top candidates of a catalogue, for the
people who grade them; this module reads their stamps and model inputs, halo_core.reports.gallery
draws the page."""

from __future__ import annotations

import numpy as np

from halo_core.config import stamp_keys
from halo_core.data.graded import candidate_stamps
from halo_core.data.preprocess import preprocess
from halo_core.model.checkpoint import load_sidecar, model_spec
from halo_core.outputs import write_file
from halo_core.survey.grades import GRADES


def write_gallery(candidates: list[dict], model_path: str, out_uri: str, *, title: str,
                  threshold: float | None) -> str:
    """Write the gallery of ``candidates`` (catalogue rows, best first) to ``out_uri``; returns it."""
    from halo_core.reports.gallery import gallery_html  # matplotlib only when writing a gallery

    sidecar = load_sidecar(model_path)
    raw = candidate_stamps(candidates, stamp_keys(sidecar["config"]["input_keys"]))
    inputs = preprocess(np.stack(raw), model_spec(sidecar)) if raw else []
    page = gallery_html(candidates, raw, inputs, title=title, threshold=threshold, grades=GRADES)
    return write_file(out_uri, page.encode())
