"""Every `halo` subcommand declares what it writes (halo_core.cli.OUTPUTS) and is checked by its kind:
an output that is or lies inside an input is refused before any work and nothing of the input changes;
a rebuild keeps a foreign file; a kill mid-write leaves the previous output whole (every dataset and file
writer is stopped at its commit). A subcommand added without a declaration, or a writing one without a
case here, fails this file."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from halo_core.cli import OUTPUTS, build_parser, main
from halo_core.data.shards import MANIFEST_FILE
from halo_core.evaluation.report import REPORT_JSON
from halo_core.evaluation.validation import VALIDATION_JSON
from halo_core.outputs import DATASET, FILE, RESUMABLE, write_dataset, write_file
from halo_core.simulate.dataset import SIMULATION_FILE
from halo_core.simulate.injection import INJECTION_FILE
from halo_core.survey.candidates import SUMMARY_FILE
from tests.killing import killed_at_commit


def _subcommands(parser=None, prefix="") -> list[str]:
    parser = parser or build_parser()
    names = []
    for action in parser._subparsers._group_actions if parser._subparsers else []:
        for name, sub in action.choices.items():
            names += _subcommands(sub, f"{prefix}{name} ") if sub._subparsers else [f"{prefix}{name}"]
    return names


# The arguments of each subcommand that reads something, with {input} where its output must not overlap.
OVERLAP_ARGV = {
    "filter": ["filter", "--preset", "smoke", "--data", "{input}"],
    "train": ["train", "--preset", "smoke", "--data", "{input}"],
    "evaluate": ["evaluate", "--preset", "smoke", "--data", "{input}", "--model", "{model}"],
    "score": ["score", "--model", "{model}", "{input}"],
    "inject": ["inject", "--preset", "smoke", "{input}"],
    "validate": ["validate", "--preset", "smoke", "--model", "{model}", "--lenses", "{input}"],
    "catalog": ["catalog", "--model", "{model}", "{input}"],
    "cutouts": ["cutouts", "--catalog", "{input}"],
    "grades import": ["grades", "import", "{input}", "--catalog", "{input}"],
}


def test_every_subcommand_declares_what_it_writes():
    assert sorted(_subcommands()) == sorted(OUTPUTS), "declare the new subcommand's output in halo_core.cli.OUTPUTS"
    assert {o.kind for o in OUTPUTS.values() if o} <= {DATASET, FILE, RESUMABLE}
    readers = {name for name, o in OUTPUTS.items() if o and o.inputs}
    assert readers == set(OVERLAP_ARGV), "add the new subcommand's arguments to OVERLAP_ARGV"


def test_every_asset_declares_what_it_writes():
    from halo_assets.assets import ASSET_OUTPUTS
    from halo_assets.definitions import defs

    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert keys == set(ASSET_OUTPUTS), "declare the new asset's output kind in halo_assets.assets.ASSET_OUTPUTS"
    assert set(ASSET_OUTPUTS.values()) <= {DATASET, FILE, RESUMABLE}


@pytest.mark.parametrize("command", sorted(OVERLAP_ARGV))
@pytest.mark.parametrize("where", ["same", "inside", "symlinked inside"])
def test_an_output_overlapping_an_input_is_refused_before_any_work(tmp_path, capsys, command, where):
    data = tmp_path / "in"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "a.npz").write_bytes(b"not read")
    (tmp_path / "alias").symlink_to(data)
    model = tmp_path / "model.pt"  # never opened: the refusal comes first
    out = {"same": data, "inside": data / "sub" / "out.csv", "symlinked inside": tmp_path / "alias" / "o"}[where]
    argv = [a.format(input=data, model=model) for a in OVERLAP_ARGV[command]]
    before = sorted((p, p.stat().st_mtime_ns) for p in data.rglob("*"))
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "the output is the input" in err or "the output lies inside the input" in err, err
    assert err.count("\n") == 1
    assert sorted((p, p.stat().st_mtime_ns) for p in data.rglob("*")) == before


def test_a_model_inside_the_output_is_refused(tmp_path, capsys):
    """The catalogue once deleted its own inputs when they lay inside --out."""
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "model.pt").write_bytes(b"weights")
    (tmp_path / "survey").mkdir()
    assert main(["catalog", "--model", str(tmp_path / "cat" / "model.pt"), str(tmp_path / "survey"), "--out",
                 str(tmp_path / "cat")]) == 2
    assert "contains the input" in capsys.readouterr().err and (tmp_path / "cat" / "model.pt").exists()


SIMULATE = ["simulate", "--preset", "smoke", "--set",
            "simulation={n_lrg: {train: 9, val: 3, test: 3}, injections_per_lrg: 1, lrgs_per_brick: 3}"]


def test_dataset_commands_keep_a_foreign_file_across_a_rebuild(tmp_path, fixtures):
    """simulate, filter and inject (dataset folders) rebuilt over their previous output."""
    raw, filtered, injected = tmp_path / "raw", tmp_path / "filtered", tmp_path / "injected"
    runs = {raw: [*SIMULATE, "--out", str(raw)],
            filtered: ["filter", "--preset", "smoke", "--set", "filter_on_ray=false", "--data", str(raw), "--out", str(filtered)],
            injected: ["inject", "--preset", "smoke", fixtures, "--out", str(injected)]}
    for out, argv in runs.items():
        assert main(argv) == 0
        (out / "my_notes.txt").write_text("mine")
        assert main(argv) == 0
        assert (out / "my_notes.txt").read_text() == "mine", out


def test_a_killed_simulate_leaves_the_previous_dataset_whole(tmp_path):
    out = tmp_path / "raw"
    assert main([*SIMULATE, "--out", str(out)]) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bigger = [*SIMULATE[:-1], "simulation={n_lrg: {train: 600, val: 30, test: 30}, lrgs_per_brick: 20}"]
    child = subprocess.Popen([sys.executable, "-m", "halo_core.cli", *bigger, "--out", str(out)],
                             env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = len(list(tmp_path.glob(".raw.v-*/*/part-*.parquet")))
    deadline = time.monotonic() + 120
    while child.poll() is None and time.monotonic() < deadline:  # kill once the new build has written a part
        if len(list(tmp_path.glob(".raw.v-*/*/part-*.parquet"))) > parts:
            break
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert json.loads((out / "simulation.json").read_text())["rows"]


def test_score_writes_its_file_whole_beside_foreign_files(tmp_path, trained, fixtures):
    (tmp_path / "notes.txt").write_text("mine")
    out = tmp_path / "scores.csv"
    for _ in range(2):
        main(["score", "--model", trained.model_path, *map(str, sorted(Path(fixtures).glob("*.npz"))), "--out", str(out)])
    assert (tmp_path / "notes.txt").read_text() == "mine" and out.read_text().startswith("id,")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# Every dataset and file writer, with {placeholders} for its inputs, and its dataset's marker (None: a file).
KILL_ARGV = {
    "simulate": ([*SIMULATE], SIMULATION_FILE),
    "filter": (["filter", "--preset", "smoke", "--set", "filter_on_ray=false", "--data", "{paired}"], MANIFEST_FILE),
    "evaluate": (["evaluate", "--preset", "smoke", "--data", "{filtered}", "--model", "{model}"], REPORT_JSON),
    "inject": (["inject", "--preset", "smoke", "{cutouts}"], INJECTION_FILE),
    "validate": (["validate", "--preset", "smoke", "--model", "{model}", "--lenses", "{cutouts}"], VALIDATION_JSON),
    "catalog": (["catalog", "--model", "{model}", "{cutouts}"], SUMMARY_FILE),
    "score": (["score", "--model", "{model}", "{npz}"], None),
    "grades import": (["grades", "import", "{grades_csv}", "--catalog", "{catalog}"], None),
}
# Its registry must hold a GO version, which a retrain run makes: tests/assets/test_promotion.py kills it.
# Resumable outputs (train, cutouts) keep what they finished: tests/core/test_resume.py, test_cutouts.py.
KILLED_ELSEWHERE = {"models promote"}


def test_every_dataset_and_file_writer_is_killed_at_its_commit():
    writers = {name for name, o in OUTPUTS.items() if o and o.kind in (DATASET, FILE)}
    assert set(KILL_ARGV) | KILLED_ELSEWHERE == writers, "add the new writer to KILL_ARGV"


def _catalog_with(folder: Path, galaxies: list[str]) -> str:
    """The columns `halo grades import` reads of a catalogue, in its brick partitioning."""
    import pandas as pd

    (folder / "brick=b1").mkdir(parents=True)
    pd.DataFrame({"galaxy_id": galaxies, "source": [f"{g}.npz" for g in galaxies], "known_lens_name": None}
                 ).to_parquet(folder / "brick=b1" / "part-0.parquet")
    return str(folder)


def _grades_csv(path: Path, galaxy: str) -> str:
    path.write_text(f"id,ra,dec,grade,grader,time\n{galaxy},0,0,A,ann,2026-12-01T10:00:00Z\n")
    return str(path)


@pytest.mark.parametrize("command", sorted(KILL_ARGV))
def test_a_writer_killed_at_its_commit_leaves_the_previous_output_untouched(command, tmp_path, request):
    """The previous output is a build of the primitive (a file, or a dataset with the command's marker); the
    command's own writes must not reach it before the commit (the primitives' SIGKILL tests cover the rest)."""
    argv, marker = KILL_ARGV[command]
    needs = {"paired": "paired_dir", "filtered": "filtered_dir", "model": "scoring_model", "cutouts": "fixtures",
             "npz": "fixtures"}
    values = {k: request.getfixturevalue(f) for k, f in needs.items() if any(f"{{{k}}}" in a for a in argv)}
    values["model"] = getattr(values.get("model"), "path", None)
    if "npz" in values:
        values["npz"] = sorted(str(p) for p in Path(values["npz"]).glob("*.npz"))
    values["catalog"] = _catalog_with(tmp_path / "catalog", ["g1", "g2"])
    values["grades_csv"] = _grades_csv(tmp_path / "second.csv", "g2")
    filled = [values.get(a[1:-1], a) if a[:1] == "{" and a[-1:] == "}" else a for a in argv]
    argv = [x for a in filled for x in (a if isinstance(a, list) else [a])]  # a list spreads into arguments
    out = tmp_path / ("previous" if marker else "previous.out")
    if marker:
        write_dataset(str(out), {marker: b'{"previous": true}', "previous.txt": b"the previous build"}, marker)
    elif command == "grades import":  # it merges into the file, which must be a grades file
        assert main(["grades", "import", _grades_csv(tmp_path / "first.csv", "g1"), "--catalog", values["catalog"],
                     "--out", str(out)]) == 0
    else:
        write_file(str(out), b"the previous file")
    killed_at_commit([*argv, "--out", str(out)], out, DATASET if marker else FILE)
