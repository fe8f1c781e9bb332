"""The survey-wide gallery in a real Dagster instance: the top candidates across every materialized brick
of the catalogue, only those the production model scored, rebuilt by itself once no registered brick is
missing."""

import re
import shutil
from pathlib import Path

import dagster as dg
import pytest

from halo_assets.resources import HaloSettings
from halo_assets.survey import BRICKS, candidate_catalog, candidate_gallery
from halo_core.evaluation.calibration import Calibration
from halo_core.model.registry import add_version, set_production
from halo_core.survey.candidates import brick_index, read_catalog
from halo_core.survey.scoring import SCORED

TOP_N = 5


def _promote(trained, halo) -> str:
    registry = halo.uri("promoted_model")
    version = add_version(registry, trained.model_path, {
        "calibration": Calibration(1.0, 0.0, 0.5, 10).to_dict(), "go_no_go": {"go": True, "failed": []},
        "test_metrics": {"tpr_at_fpr": [{"fpr": 1e-2, "tpr": 0.9, "threshold": 0.5}]}})
    set_production(registry, version, reason="test")
    return version


def _gallery_ids(path: Path) -> list[str]:
    """The galaxy ids of the gallery's rows, in its order (rank, then galaxy_id, are the first cells)."""
    return re.findall(r'<tr class="candidate"[^>]*><td data-v="\d+">\d+</td><td data-v="([^"]+)">', path.read_text())


@pytest.fixture
def survey(ray_local, trained, paired_dir, tmp_path):
    """The simulator's test split as the survey (its bricks partition the catalogue) and a production model."""
    folder = tmp_path / "sim"
    folder.mkdir()
    for i, part in enumerate(sorted((Path(paired_dir) / "test").glob("*.parquet"))):
        shutil.copy(part, folder / f"part-{i}.parquet")
    halo = HaloSettings(preset="smoke", overrides=[f"score_path={folder}", f"catalog.gallery_top_n={TOP_N}"],
                        root_uri=str(tmp_path / "root"))
    bricks = sorted(brick_index([str(folder)]))[:2]
    assert len(bricks) == 2
    return halo, bricks, _promote(trained, halo), tmp_path / "root" / "smoke" / "candidate_catalog"


def _run(assets, instance, halo, **kwargs):
    return dg.materialize(assets, instance=instance, resources={"halo": halo}, raise_on_error=False, **kwargs)


def _metadata(result) -> dict:
    return {k: v.value for k, v in result.get_asset_materialization_events()[0].materialization.metadata.items()}


def test_the_survey_gallery_ranks_every_brick_the_production_model_scored(survey, trained):
    halo, bricks, first, out = survey
    defs = dg.Definitions(assets=[candidate_catalog, candidate_gallery], resources={"halo": halo})
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(BRICKS.name, bricks)
        # it rebuilds by itself (eager) once no registered brick is missing, not after each brick
        evaluation = None
        for brick, requested in zip(bricks, (0, 1)):
            assert _run([candidate_catalog], instance, halo, partition_key=brick).success
            evaluation = dg.evaluate_automation_conditions(defs=defs, instance=instance,
                                                           cursor=evaluation and evaluation.cursor)
            assert evaluation.get_num_requested(candidate_gallery.key) == requested, brick
        result = _run([candidate_gallery], instance, halo)
        assert result.success
        metadata = _metadata(result)
        catalog = read_catalog(str(out))
        scored = catalog[catalog["status"] == SCORED]
        assert metadata["bricks"] == 2 and metadata["rows"] == len(catalog) and metadata["model_version"] == first
        assert metadata["gallery"] == str(out / "_gallery" / "index.html") and metadata["bricks_other_model"] == {}
        # the survey's top N by calibrated probability, whichever brick holds them
        assert _gallery_ids(out / "_gallery" / "index.html") == scored.nlargest(TOP_N, "probability")["galaxy_id"].tolist()
        assert set(scored.nlargest(TOP_N, "probability")["brick"]) <= set(bricks)

        # a new production model: no brick is scored by it yet, so there is no gallery to rank
        second = _promote(trained, halo)
        failed = _run([candidate_gallery], instance, halo)
        assert not failed.success
        error = next(e for e in failed.all_events if e.is_step_failure).step_failure_data.error.message
        assert f"scored by the production model {second}" in error
        # one brick re-scored: the gallery ranks it alone and names the other as scored by the old model
        assert _run([candidate_catalog], instance, halo, partition_key=bricks[0]).success
        metadata = _metadata(_run([candidate_gallery], instance, halo))
        assert metadata["bricks"] == 1 and metadata["bricks_other_model"] == {bricks[1]: [first]}
        assert metadata["rows"] == int((read_catalog(str(out))["brick"] == bricks[0]).sum())
        rescored = read_catalog(str(out), [bricks[0]])
        assert set(_gallery_ids(out / "_gallery" / "index.html")) <= set(rescored["galaxy_id"])
