"""The production instance storage for real: a PostgreSQL server started on 127.0.0.1 for this test
(Debian's postgresql package; `.ci/run` installs it), a halo run stored there and read back through
a second instance object, as the webserver and daemon would."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import dagster as dg
import pytest

from halo_assets.demo import run_retrain
from tests.factories import free_port

PG_BIN = max(Path("/usr/lib/postgresql").glob("*/bin"), default=Path("/usr/lib/postgresql/15/bin"))


def _as_postgres(*cmd: str) -> None:
    """PostgreSQL refuses to run as root; run its tools as the `postgres` system user when we are root."""
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*prefix, *cmd], check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def postgres_url():
    pytest.importorskip("dagster_postgres")
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL server binaries not found in {PG_BIN} (Debian package postgresql)")
    # not under pytest's tmp dirs: those are root-only (0700), and the server runs as `postgres`
    base = Path(tempfile.mkdtemp(prefix="halo-pg-"))
    data = base / "data"
    data.mkdir()
    if os.geteuid() == 0:
        for path in (base, data):
            shutil.chown(path, "postgres", "postgres")
    port = free_port()
    _as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-U", "halo", "--auth=trust")
    _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-w", "-l", str(data / "log"), "start",
                 "-o", f"-p {port} -h 127.0.0.1 -k {data}")
    # psycopg2 named explicitly: SQLAlchemy 2.1 defaults postgresql:// to psycopg 3, which dagster-postgres does not use
    yield f"postgresql+psycopg2://halo@127.0.0.1:{port}/postgres"
    _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "stop")
    shutil.rmtree(base, ignore_errors=True)


def test_runs_and_check_results_persist_in_postgres(postgres_url, tmp_path):
    storage = {"storage": {"postgres": {"postgres_url": postgres_url}}}
    with dg.instance_for_test(overrides=storage) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        result = run_retrain("smoke", ["epochs=1"], str(tmp_path), instance)
        run_id = result.run_id
    with dg.instance_for_test(overrides=storage) as reader:  # a second process's view of the same database
        run = reader.get_run_by_id(run_id)
        assert run is not None and run.job_name == "retrain_job"
        key = dg.AssetCheckKey(dg.AssetKey("filtered_dataset"), "split_integrity")
        record = reader.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
        assert record.run_id == run_id and record.status.value == "SUCCEEDED"
