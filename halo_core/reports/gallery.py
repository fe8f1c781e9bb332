"""The inspection gallery's page: the top candidates of a catalogue, for the people who grade them. Each
row shows the g,r,z colour composite, the model's input (the preprocessed residual, what the network
sees), score and probabilities; the table sorts by any column in the browser, without a server or a
network connection."""

from __future__ import annotations

import html

import numpy as np

from halo_core.reports.figures import stamp_data_uri

COLUMNS = ("rank", "galaxy_id", "brick", "ra", "dec", "score", "probability", "probability_at_prevalence")
ZOOM = 2  # 64 px stamps drawn at 128 px, nearest-neighbour: pixels stay pixels


def composite(stamp: np.ndarray) -> np.ndarray:
    """(3, H, W) g,r,z nanomaggies -> (H, W, 3) RGB in [0, 1]: z red, r green, g blue, one asinh
    stretch for all bands (colours stay comparable), softened at the sky's noise level."""
    rgb = stamp[::-1].transpose(1, 2, 0).astype(np.float64)
    sky = max(float(np.median(np.abs(rgb - np.median(rgb)))) * 1.4826, 1e-6)
    stretched = np.arcsinh(np.clip(rgb, 0, None) / (3 * sky))
    return np.clip(stretched / max(float(np.percentile(stretched, 99.5)), 1e-6), 0, 1)


def residual(model_input: np.ndarray, limit: float = 5.0) -> np.ndarray:
    """(3, H, W) preprocessed input in robust sigma -> (H, W, 3) in [0, 1], the same channel order."""
    return np.clip((model_input[::-1].transpose(1, 2, 0) + limit) / (2 * limit), 0, 1)


def _cell(value) -> str:
    if isinstance(value, float):
        return f'<td data-v="{value!r}">{value:.4g}</td>'
    return f'<td data-v="{html.escape(str(value))}">{html.escape(str(value))}</td>'


SORT_JS = """
document.querySelectorAll('th[data-col]').forEach(th => th.onclick = () => {
  const body = th.closest('table').tBodies[0], i = th.cellIndex, up = th.dataset.up !== '1';
  th.dataset.up = up ? '1' : '0';
  const key = r => { const v = r.cells[i].dataset.v; const n = parseFloat(v); return isNaN(n) ? v : n; };
  [...body.rows].sort((a, b) => (key(a) > key(b) ? 1 : key(a) < key(b) ? -1 : 0) * (up ? 1 : -1))
    .forEach(r => body.appendChild(r));
});
"""


# Grading (halo_core.survey.grades): every click is one row of the grades CSV, so a change of mind is
# kept and `halo grades import` lets the latest win; nothing leaves the browser but the downloaded file.
GRADES_JS = """
const grades = [];
function csvField(v) { v = String(v); return /[",\\n]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v; }
function gradeRow(button) {
  const row = button.closest('tr');
  const grader = document.getElementById('grader').value.trim() || 'anonymous';
  grades.push({id: row.dataset.id, ra: row.dataset.ra, dec: row.dataset.dec, grade: button.dataset.grade,
               grader: grader, time: new Date().toISOString()});
  row.dataset.grade = button.dataset.grade;
  row.querySelectorAll('button.grade').forEach(b => b.classList.toggle('chosen', b === button));
  document.getElementById('graded').textContent = grades.length;
}
function gradesCsv() {
  const columns = ['id', 'ra', 'dec', 'grade', 'grader', 'time'];
  return [columns.join(',')].concat(grades.map(g => columns.map(c => csvField(g[c])).join(','))).join('\\n') + '\\n';
}
function downloadGrades() {
  const link = document.createElement('a');
  link.href = URL.createObjectURL(new Blob([gradesCsv()], {type: 'text/csv'}));
  link.download = 'grades.csv';
  document.body.appendChild(link);
  link.click();
  link.remove();
}
document.querySelectorAll('button.grade').forEach(b => b.onclick = () => gradeRow(b));
document.getElementById('download').onclick = downloadGrades;
"""
VIEWER_URL = "https://www.legacysurvey.org/viewer?ra={ra:.6f}&dec={dec:.6f}&layer=ls-dr10&zoom=16"


def _grade_cells(c: dict, grades) -> str:
    """The known-lens match, the sky-viewer link and the grade buttons of one candidate."""
    name = c.get("known_lens_name")
    known = (f"{html.escape(str(name))} ({html.escape(str(c.get('known_lens_grading')))})"
             if isinstance(name, str) and name else "")
    finite = all(isinstance(c.get(k), float) and np.isfinite(c[k]) for k in ("ra", "dec"))
    link = f'<a href="{html.escape(VIEWER_URL.format(ra=c["ra"], dec=c["dec"]))}" target="_blank">viewer</a>' if finite else ""
    buttons = "".join(f'<button class="grade" data-grade="{g}">{g}</button>' for g in grades)
    return f'<td data-v="{html.escape(known)}">{known}</td><td>{link}</td><td class="grades">{buttons}</td>'


def gallery_html(candidates: list[dict], raw: list[np.ndarray], inputs, *, title: str, threshold: float | None,
                 grades) -> str:
    """The page of ``candidates`` (catalogue rows, best first) with their ``raw`` stamps (g,r,z
    nanomaggies), their model ``inputs`` and a button per grade of ``grades``."""
    rows = []
    for rank, (c, stamp, x) in enumerate(zip(candidates, raw, inputs), start=1):
        values = {**c, "rank": rank}
        cells = "".join(_cell(values[k]) for k in COLUMNS)
        colour, model_input = stamp_data_uri(composite(stamp), ZOOM), stamp_data_uri(residual(x), ZOOM)
        rows.append(f'<tr class="candidate" data-id="{html.escape(str(c["galaxy_id"]))}" data-ra="{c["ra"]!r}" '
                    f'data-dec="{c["dec"]!r}">{cells}<td><img src="{colour}" alt="g,r,z"></td>'
                    f'<td><img src="{model_input}" alt="model input"></td>{_grade_cells(c, grades)}</tr>')
    head = "".join(f'<th data-col="{k}">{k}</th>' for k in COLUMNS)
    cut = "not measured" if threshold is None else f"{threshold:.4g}"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:1em}} td,th{{padding:2px 8px;text-align:right}}
th[data-col]{{cursor:pointer;text-decoration:underline dotted}} img{{image-rendering:pixelated}}
button.chosen{{font-weight:bold;background:#fd6}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>{len(rows)} top candidates by calibrated probability; operating threshold {cut}. Click a header to sort.
Images: g,r,z composite (z red, g blue; asinh stretch) and the model's input (preprocessed residual,
&plusmn;5 robust sigma).</p>
<p>Grade each candidate (A, B, C or not a lens); grader <input id="grader" placeholder="your name">;
<span id="graded">0</span> grades so far; <button id="download">download grades.csv</button>, then
<code>halo grades import grades.csv --catalog CATALOGUE --out grades.parquet</code>.</p>
<table><thead><tr>{head}<th>g,r,z</th><th>model input</th><th data-col="known_lens">known lens</th>
<th>sky</th><th>grade</th></tr></thead><tbody>
{''.join(rows)}
</tbody></table><script>{SORT_JS}{GRADES_JS}</script></body></html>"""
