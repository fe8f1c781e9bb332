"""trained_model's torchrun branch, materialized in a real instance: two CPU ranks under Dagster Pipes."""

import shutil

import dagster as dg

from halo_assets.assets import trained_model
from halo_assets.resources import PROFILES, HaloSettings
from tests.factories import free_port


def test_torchrun_branch_forwards_rank0_log_lines_to_the_run(tmp_path, filtered_dir, monkeypatch):
    root = tmp_path / "root"
    shutil.copytree(filtered_dir, root / "smoke" / "filtered_dataset")
    monkeypatch.setenv("PET_MASTER_PORT", str(free_port()))  # torchrun's --master-port, from the environment
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    halo = HaloSettings(preset="smoke", overrides=["nproc_per_node=2", "epochs=1"], root_uri=str(root))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(PROFILES.name, ["smoke"])
        result = dg.materialize([trained_model], instance=instance, partition_key="smoke", resources={"halo": halo})
        messages = [e.user_message for e in instance.all_logs(result.run_id) if not e.is_dagster_event]
    # a log event of the run, not only captured stderr; once, as only rank 0 opens the Pipes session
    assert sum("epoch 1/1" in m for m in messages) == 1, messages
    (materialization,) = result.asset_materializations_for_node("trained_model")
    assert materialization.metadata["epochs_run"].value == 1 and materialization.partition == "smoke"
