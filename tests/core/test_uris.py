"""Local writes: artifacts are as readable as any file the user makes (the umask decides)."""

import os
import stat

import pytest

from halo_core import uris
from halo_core.outputs import dataset_folder


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_writes_and_staged_directories_respect_the_umask(tmp_path, umask):
    for mask, file_mode, dir_mode in ((0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o002, 0o664, 0o775)):
        umask(mask)
        target = tmp_path / f"m{mask:o}"
        uris.atomic_write_json(str(target / "a.json"), {"x": 1})
        assert _mode(target / "a.json") == file_mode
        with dataset_folder(str(target / "built"), "done.json") as out:
            uris.atomic_write_json(str(out / "done.json"), {})
        assert _mode(target / "built") == dir_mode and _mode(target / "built" / "done.json") == file_mode
