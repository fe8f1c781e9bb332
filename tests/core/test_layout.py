"""halo_core's stages depend one way (README, Layout): the data level never imports the model, the
trainer or the evaluation, and halo_core never imports Dagster."""

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "halo_core"
LATER_STAGES = ("halo_core.model", "halo_core.training", "halo_core.evaluation", "halo_core.survey", "halo_core.train")


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


@pytest.mark.parametrize("stage", ["data", "simulate"])
def test_the_data_level_imports_no_later_stage(stage):
    offending = {f"{p.relative_to(CORE)}: {m}" for p in (CORE / stage).glob("*.py") for m in imports(p)
                 if m.startswith(LATER_STAGES) and not (stage == "simulate" and m.startswith("halo_core.simulate"))}
    assert not offending


def test_halo_core_never_imports_dagster():
    assert not {f"{p.relative_to(CORE)}: {m}" for p in CORE.rglob("*.py") for m in imports(p)
                if m.split(".")[0] in ("dagster", "dagster_aws", "dagster_k8s")}
