"""A command stopped at the commit of its output, as SIGKILL would stop it, in this process: the swap of a
dataset folder's link (halo_core.outputs._point) or the rename of a file (halo_core.uris.replace_file).
The primitives' own SIGKILL tests (tests/core/test_output_primitives.py) show a kill at any other moment
leaves the previous output whole when nothing reached it before the commit; this shows a command's writes
reach its output only through that commit."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from halo_core import outputs, uris
from halo_core.cli import main
from halo_core.outputs import DATASET, FILE


class Killed(BaseException):
    """SIGKILL at the commit: nothing after it runs (no handler of the product takes a BaseException of ours)."""


def output_state(out: Path, committing: Path | None = None) -> dict:
    """Where ``out`` points and every file at or under it with its bytes, inode and mtime, so a rewrite of
    the same bytes shows too; ``committing``, the temp file being renamed (inside a registry folder), aside."""
    files = [out] if out.is_file() else sorted(p for p in out.rglob("*") if p.is_file() and p != committing)
    return {"link": os.readlink(out) if out.is_symlink() else None,
            **{str(p.relative_to(out)): (p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns) for p in files}}


def killed_at_commit(run: list[str] | Callable[[], object], out: Path, kind: str) -> None:
    """Run ``run`` (the CLI's argv, or a callable: a Dagster materialization) and stop it at the first commit
    that reaches ``out`` (its output, of ``kind``; a registry folder for the pointer written inside it).
    Fails unless that commit is the primitive's for ``kind`` and ``out`` is, at that moment, exactly as
    before the run."""
    out = Path(os.path.abspath(out))
    before, seen = output_state(out), []
    point, replace = outputs._point, uris.replace_file
    what = f"halo {' '.join(run[:2])}" if isinstance(run, list) else f"materializing {out.name}"

    def stop(at: str, committing: Path | None = None):
        seen.append((at, output_state(out, committing)))
        raise Killed

    def killing_point(target, version):
        if Path(os.path.abspath(target)) == out:
            stop(DATASET)
        point(target, version)

    def killing_replace(tmp, target):
        if Path(os.path.abspath(target)).is_relative_to(out):
            stop(FILE, Path(os.path.abspath(tmp)))
        replace(tmp, target)

    with pytest.MonkeyPatch.context() as patch:  # undone before the next writer is stopped
        patch.setattr(outputs, "_point", killing_point)
        patch.setattr(uris, "replace_file", killing_replace)
        try:
            ended = main(run) if isinstance(run, list) else run()
        except Killed:
            ended = "killed"
        except Exception:  # a runner that wraps what stopped its step (Dagster reports a failed step)
            if not seen:
                raise
            ended = "killed"
    if not seen:
        pytest.fail(f"{what} ended ({ended}) without committing {out} through halo_core.outputs")
    at, state = seen[0]
    assert at == kind, f"the first write to {out} was a {at} commit, not the {kind} one: it bypasses the build"
    changed = sorted(k for k in before.keys() | state.keys() if before.get(k) != state.get(k))
    assert not changed, f"before its commit {what} already changed {changed} of {out}"
    assert output_state(out) == before, f"{what}, stopped at its commit, left {out} changed"
