"""Count string-key reads (``x["key"]``, ``x.get("key")``) in halo's code, by module: the measure of issue 25's
typed results (results read as attributes of dataclasses, not as dict keys). Reads only; a write
(``x["key"] = ...``) builds a dict and is not counted.

    python scripts/count_key_reads.py [--by-module]
"""

from __future__ import annotations

import argparse
import ast
import json
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("halo_core", "halo_assets")


def key_reads(source: str) -> int:
    tree = ast.parse(source)
    stored = {id(t) for node in ast.walk(tree) if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign))
              for t in (node.targets if isinstance(node, ast.Assign) else [node.target])}
    n = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and id(node) not in stored and isinstance(node.slice, ast.Constant) \
                and isinstance(node.slice.value, str):
            n += 1
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            n += 1
    return n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--by-module", action="store_true", help="one count per module, largest first")
    args = p.parse_args()
    counts = Counter({str(path.relative_to(ROOT)): key_reads(path.read_text())
                      for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))})
    out = {"total": sum(counts.values()),
           **{pkg: sum(v for k, v in counts.items() if k.startswith(pkg)) for pkg in PACKAGES}}
    if args.by_module:
        out["modules"] = dict(counts.most_common())
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
