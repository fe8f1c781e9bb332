"""The real-sky assets on a real Dagster instance: real_lrg_cutouts against the loopback cutout service."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd

from halo_assets.real_data import real_lrg_cutouts
from halo_assets.resources import PROFILES, HaloSettings
from halo_core.simulate.injection import read_cutouts
from tests.conftest import REAL_CUTOUTS
from tests.cutout_service import CutoutService


def test_real_lrg_cutouts_fetches_into_the_folder_paired_stamps_reads_and_resumes(tmp_path):
    files = sorted(REAL_CUTOUTS.glob("*.npz"))
    images = {}
    for f in files:
        with np.load(f, allow_pickle=False) as z:
            images[(round(float(z["meta_ra"]), 4), round(float(z["meta_dec"]), 4))] = z["cutout"].copy()
    catalog = tmp_path / "lrgs.parquet"
    pd.DataFrame({"RA": [k[0] for k in images] + [200.0], "DEC": [k[1] for k in images] + [10.0]}).to_parquet(catalog)
    lrg_dir = tmp_path / "lrg_cutouts"
    with CutoutService(images) as service, dg.instance_for_test() as instance:
        halo = HaloSettings(preset="smoke", root_uri=str(tmp_path / "root"), overrides=[
            f"real_sky.lrg_catalog={catalog}", f"lrg_cutouts_path={lrg_dir}", f"real_sky.base_url={service.url}"])
        instance.add_dynamic_partitions(PROFILES.name, ["smoke"])
        runs = [dg.materialize([real_lrg_cutouts], instance=instance, partition_key="smoke", resources={"halo": halo})
                for _ in range(2)]
        first, second = (r.asset_materializations_for_node("real_lrg_cutouts")[0].metadata for r in runs)
        assert first["fetched"].value == 6 and first["refused"].value == 1 and first["requests"].value == 7
        assert second["requests"].value == 0 and second["skipped_as_done"].value == 7  # resumed: no request
        assert len(service.requests) == 7
    cutouts = read_cutouts(str(lrg_dir))  # what paired_stamps' injected mode reads
    assert len(cutouts) == 6 and {c.meta["brickname"] for c in cutouts} == {
        str(np.load(f)["meta_brickname"]) for f in files}


def test_real_lrg_cutouts_says_why_it_skipped(tmp_path):
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(PROFILES.name, ["smoke"])
        result = dg.materialize([real_lrg_cutouts], instance=instance, partition_key="smoke",
                                resources={"halo": HaloSettings(preset="smoke", root_uri=str(tmp_path))})
    metadata = result.asset_materializations_for_node("real_lrg_cutouts")[0].metadata
    assert metadata["skipped"].value is True and "lrg_catalog" in metadata["reason"].value


def test_sim_to_real_purity_warns_and_says_why(tmp_path):
    from dataclasses import asdict

    from halo_assets.real_data import sim_to_real_purity
    from halo_core import uris
    from halo_core.evaluation.real_sky import purity_target
    from halo_core.evaluation.results import Rate
    from halo_core.evaluation.validation import VALIDATION_JSON

    unset = sim_to_real_purity(HaloSettings(preset="smoke", root_uri=str(tmp_path)))
    assert not unset.passed and unset.severity == dg.AssetCheckSeverity.WARN
    assert "not measurable" in unset.metadata["status"].value
    halo = HaloSettings(preset="smoke", root_uri=str(tmp_path), overrides=["real_validation.lenses_path=lenses"])
    recall = Rate.of(36, 40)
    for n, k, passed, status in ((1365, 0, False, "not measurable"), (20_000, 0, True, "met"),
                                 (1000, 40, False, "not met")):
        target = purity_target(recall, Rate.of(k, n), prevalence=1e-3, purity=0.75)
        uris.atomic_write_json(uris.join(halo.uri("real_validation"), VALIDATION_JSON),
                               {"purity_target_check": asdict(target)})
        result = sim_to_real_purity(halo)
        assert result.passed is passed and result.metadata["status"].value.startswith(status)
        assert result.metadata["n_nonlenses"].value == n and result.metadata["nonlenses_needed"].value == 12_789
