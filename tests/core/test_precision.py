"""The `precision` key: auto resolves from the device and the CPU's flags, and a run records what it resolved to."""

import pytest

from halo_core import precision
from halo_core.config import load_preset
from halo_core.model.checkpoint import load_sidecar, model_precision


def _cpuinfo(tmp_path, flags: str):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 avx2 {flags}\n\n")
    return str(path)


@pytest.mark.parametrize(("flags", "has"), [("avx512f amx_bf16 amx_tile", True), ("avx512f avx512_bf16", True),
                                            ("avx512f avx512_vnni", False), ("", False)])
def test_bf16_units_are_read_from_the_cpu_flags(tmp_path, flags, has):
    assert precision.cpu_has_bf16(_cpuinfo(tmp_path, flags)) is has


def test_a_machine_without_cpuinfo_has_no_bf16(tmp_path):
    assert not precision.cpu_has_bf16(str(tmp_path / "absent"))


def test_auto_resolves_to_bf16_exactly_where_the_cpu_has_it():
    assert precision.resolve("auto", "cpu") == ("bf16" if precision.cpu_has_bf16() else "fp32")
    assert precision.resolve("fp32", "cpu") == "fp32" and precision.resolve("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="auto, fp32 or bf16"):
        precision.resolve("fp16", "cpu")


def test_the_resolved_precision_keys_the_training_run():
    fp32, bf16 = (load_preset("smoke", {"precision": p}) for p in ("fp32", "bf16"))
    assert fp32.training_hash() != bf16.training_hash()
    auto = load_preset("smoke", {"precision": "auto", "device": "cpu"})
    assert auto.training_hash() == {"fp32": fp32, "bf16": bf16}[auto.resolved_precision()].training_hash()
    assert fp32.config_hash() != auto.config_hash()  # the key as written stays in the provenance hash


def test_the_sidecar_records_the_resolved_precision(trained, smoke_cfg):
    sidecar = load_sidecar(trained.model_path)
    assert sidecar["precision"] == smoke_cfg.resolved_precision() == model_precision(sidecar)
    assert model_precision({}) == "fp32"  # a model from before the record ran in fp32


def test_a_bf16_run_trains_and_says_so(tmp_path, smoke_cfg, filtered_dir, caplog):
    import logging

    from halo_core.training.trainer import fit

    cfg = smoke_cfg.model_copy(update={"precision": "bf16", "epochs": 1})
    with caplog.at_level(logging.INFO, logger="halo_core.training.trainer"):
        result = fit(cfg, filtered_dir, str(tmp_path / "run"))
    assert "bf16 autocast" in caplog.text and load_sidecar(result.model_path)["precision"] == "bf16"
    assert result.history[0].train_loss > 0 and result.history[0].val_auroc > 0
    assert cfg.training_hash() != smoke_cfg.model_copy(update={"precision": "fp32", "epochs": 1}).training_hash()
