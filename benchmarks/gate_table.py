"""The shortcut-gate table across simulator settings x sample constructions (issue 15): does the verdict of
`recommended` hinge on the simulator's free parameters? Prints one JSON line per (setting, construction).

Settings: the nominal simulator; the default domain randomisation; a harder randomisation (more compact
sources, twice the neighbours, wider seeing). Constructions: unpaired + residual (`recommended`),
ctrl_negative + residual, paired_6ch + per_sample_robust (`gen5_prime`).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from halo_core.config import SimulationConfig, load_preset
from halo_core.data.filtering import build_filtered_dataset
from halo_core.evaluation.gates import shortcut_gates
from halo_core.simulate import dataset, simulate_dataset

SETTINGS = {
    "nominal": ({"domain_randomization": False}, {}),
    "randomised": ({"domain_randomization": True}, {}),
    "randomised_hard": ({"domain_randomization": True},
                        {"DR_COMPACT_SOURCE_FRACTION": 0.5, "DR_NEIGHBOURS_MEAN": 1.6, "DR_SEEING_SIGMA": 0.25}),
}
CONSTRUCTIONS = {
    "recommended (unpaired, residual)": ("recommended", {}),
    "ctrl_negative (residual)": ("recommended", {"sample_construction": "ctrl_negative"}),
    "gen5_prime (paired_6ch, robust)": ("gen5_prime", {}),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-lrgs", type=int, default=500)
    p.add_argument("--seed", type=int, default=3)
    args = p.parse_args()
    for setting, (sim, constants) in SETTINGS.items():
        saved = {k: getattr(dataset, k) for k in constants}
        for k, v in constants.items():
            setattr(dataset, k, v)
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "raw"
            simulate_dataset(raw, SimulationConfig(n_lrg={"train": args.train_lrgs, "val": 40, "test": 40},
                                                   seed=args.seed, **sim))
            built = {}
            for label, (preset, overrides) in CONSTRUCTIONS.items():
                cfg = load_preset(preset, overrides)
                data = built.setdefault(cfg.normalization, str(Path(tmp) / cfg.normalization))
                if not Path(data, "manifest.json").exists():
                    build_filtered_dataset(cfg, str(raw), data)
                g = shortcut_gates(cfg, data)
                print(json.dumps({"setting": setting, "construction": label, "passed": g.passed,
                                  "deployable": g.deployable, "null_informative": g.selection_null.informative,
                                  "null_max_auc": round(g.selection_null.max_auc, 3) if g.selection_null.informative else None,
                                  **{f"{k}_probe": [round(r.auc, 3), [round(v, 3) for v in r.ci95], r.n]
                                     for k, r in g.probes.items()}}), flush=True)
        for k, v in saved.items():
            setattr(dataset, k, v)


if __name__ == "__main__":
    main()
