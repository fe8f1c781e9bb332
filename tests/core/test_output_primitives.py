"""The three output kinds (halo_core.outputs), each checked for what every writer must guarantee:
overlap refused, a kill mid-write leaves the previous output whole, a foreign file survives, names
are matched exactly. tests/test_outputs.py runs the same checks through every `halo` subcommand."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from halo_core import outputs, uris
from halo_core.errors import BuildLockedError, StorageError


def _build(out, n, marker="done.json", inputs=()):
    with outputs.dataset_folder(str(out), marker, inputs) as d:
        (d / "part").mkdir()
        for i in range(n):
            (d / "part" / f"p{i}.txt").write_text(f"{n}-{i}")
        uris.atomic_write_json(str(d / marker), {"n": n})


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*") if p.is_file())


def _killed_child(code: str, wait_for) -> None:
    """Run ``code`` in a child python, SIGKILL it once ``wait_for()`` is true (or it stops itself)."""
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env={**os.environ})
    deadline = time.monotonic() + 60
    while not wait_for() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    child.wait()


@pytest.mark.parametrize("relation", ["same", "inside", "contains", "symlink"])
def test_an_output_overlapping_an_input_is_refused(tmp_path, relation):
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "alias").symlink_to(data)
    out = {"same": data, "inside": data / "built", "contains": tmp_path, "symlink": tmp_path / "alias" / "x"}[relation]
    with pytest.raises(StorageError, match="output (is|lies inside|contains) the input"):
        outputs.refuse_overlap(str(out), [str(data)])
    for write in (lambda: _build(out, 1, inputs=[str(data)]), lambda: outputs.write_file(str(out), b"x", [str(data)]),
                  lambda: outputs.resumable_folder(str(out), [str(data)])):
        with pytest.raises(StorageError, match="the input"):
            write()
    assert sorted(os.listdir(data)) == []  # nothing written into, or deleted from, the input


def test_s3_overlap_is_by_prefix():
    outputs.refuse_overlap("s3://b/out", ["s3://b/outer", "s3://b/in"])
    with pytest.raises(StorageError):
        outputs.refuse_overlap("s3://b/in/out", ["s3://b/in/"])


def test_a_dataset_rebuild_keeps_foreign_files_and_readers_never_see_it_missing(tmp_path):
    out = tmp_path / "ds"
    _build(out, 3)
    (out / "notes.txt").write_text("mine")  # a user's file inside the build
    (out / "part" / "extra.txt").write_text("mine too")
    _build(out, 2)
    assert _files(out) == [".halo_written.json", "done.json", "notes.txt", "part/extra.txt", "part/p0.txt", "part/p1.txt"]
    assert out.is_symlink() and json.loads((out / "done.json").read_text()) == {"n": 2}
    # the previous version is gone: only the live one, the lock and the link remain beside it
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".ds.v-")) == [os.readlink(out)]


def test_a_folder_no_build_wrote_is_refused_never_replaced(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    with pytest.raises(BuildLockedError, match="holds no done.json"):
        _build(out, 1)
    assert _files(out) == ["thesis.tex"]


def test_a_build_that_raises_or_writes_no_marker_keeps_the_previous(tmp_path):
    out = tmp_path / "ds"
    _build(out, 2)
    with pytest.raises(RuntimeError), outputs.dataset_folder(str(out), "done.json") as d:
        (d / "half").write_text("x")
        raise RuntimeError("killed")
    with pytest.raises(StorageError, match="wrote no done.json"), outputs.dataset_folder(str(out), "done.json") as d:
        (d / "half").write_text("x")
    assert json.loads((out / "done.json").read_text()) == {"n": 2} and "half" not in _files(out)


def test_a_killed_dataset_build_leaves_the_previous_whole_and_the_next_cleans_up(tmp_path):
    out = tmp_path / "ds"
    _build(out, 2)
    before = {p: (out / p).read_bytes() for p in _files(out)}
    started = tmp_path / "started"
    _killed_child(f"""
        import os, signal, pathlib
        from halo_core import outputs
        with outputs.dataset_folder({str(out)!r}, "done.json") as d:
            (d / "part").mkdir()
            (d / "part" / "p0.txt").write_text("new")
            pathlib.Path({str(started)!r}).write_text("")
            os.kill(os.getpid(), signal.SIGKILL)
        """, started.exists)
    assert started.exists()
    assert {p: (out / p).read_bytes() for p in _files(out)} == before
    _build(out, 1)
    assert sorted(p.name for p in tmp_path.iterdir() if ".v-" in p.name) == [os.readlink(out)]


def test_a_killed_file_write_leaves_the_previous_file(tmp_path):
    target = tmp_path / "scores.csv"
    outputs.write_file(str(target), b"old,rows\n")
    (tmp_path / "foreign.txt").write_text("mine")
    _killed_child(f"""
        from halo_core import outputs
        outputs.write_file({str(target)!r}, b"x" * (1 << 30))
        """, lambda: any(p.name.endswith(".tmp") and p.stat().st_size > 0 for p in tmp_path.iterdir()))
    assert target.read_bytes() == b"old,rows\n" and (tmp_path / "foreign.txt").read_text() == "mine"


def test_a_resumable_folder_keeps_every_finished_item_and_foreign_files(tmp_path):
    folder = outputs.resumable_folder(str(tmp_path / "cutouts"))
    (tmp_path / "cutouts" / "README").write_text("mine")
    _killed_child(f"""
        import os, signal
        from halo_core import outputs
        for i in range(3):
            outputs.write_item({folder!r}, f"brick=0001/c{{i}}.npz", bytes([i]) * 100)
        outputs.write_item({folder!r}, "brick=0001/c3.npz", b"y" * (1 << 30))
        """, lambda: any(".c3.npz." in p.name for p in (tmp_path / "cutouts").rglob("*.tmp")))
    done = sorted(p.name for p in (tmp_path / "cutouts" / "brick=0001").glob("*.npz"))
    assert done == ["c0.npz", "c1.npz", "c2.npz"]
    assert (tmp_path / "cutouts" / "brick=0001" / "c2.npz").read_bytes() == bytes([2]) * 100
    assert (tmp_path / "cutouts" / "README").read_text() == "mine"
    assert outputs.item_exists(folder, "brick=0001/c1.npz") and not outputs.item_exists(folder, "brick=0001/c3.npz")


@pytest.mark.parametrize("name", ["../escape.npz", "/etc/passwd", "", "a/../../b"])
def test_an_item_name_stays_inside_its_folder(tmp_path, name):
    with pytest.raises(StorageError, match="relative path inside the folder"):
        outputs.write_item(str(tmp_path), name, b"x")


def test_name_patterns_are_never_globbed(tmp_path):
    """`--out 'o*'` once removed the staging folder of another build (`o1`)."""
    _build(tmp_path / "o1", 1)
    other = sorted(tmp_path.glob(".o1.v-*"))
    _build(tmp_path / "o*", 1)
    _build(tmp_path / "o*", 2)
    assert sorted(tmp_path.glob(".o1.v-*")) == other
    assert json.loads((tmp_path / "o1" / "done.json").read_text()) == {"n": 1}


def test_a_symlink_the_user_made_is_never_followed_into_a_deletion(tmp_path):
    theirs = tmp_path / "theirs"
    _build(theirs, 2)  # even a build's folder, when --out only links to it
    (tmp_path / "out").symlink_to(theirs)
    with pytest.raises(BuildLockedError, match="not to a build of out"):
        _build(tmp_path / "out", 1)
    assert json.loads((theirs / "done.json").read_text()) == {"n": 2}
