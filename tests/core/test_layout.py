"""halo_core's units depend one way (README, Layout): a module imports, at its top or inside a function,
only from its own unit or a lower one in LAYERS; no two modules import each other, even through others;
only the rendering package draws; halo_core never imports Dagster. A new unit fails here until it is placed."""

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "halo_core"
# lowest first; a unit is a subpackage or a top-level module of halo_core ("halo_core": its __init__)
LAYERS = (
    ("halo_core", "errors"),
    ("uris",),
    ("outputs", "progress", "precision", "ray_runtime", "metrics"),
    ("config",),
    ("data",),
    ("reports",),  # renders evaluation's and survey's results, so below them: they call it, it reads them
    ("simulate",),
    ("model",),
    ("training",),
    ("evaluation",),
    ("survey",),
    ("train", "cli"),
)
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function (``from a import b``: a and a.b)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def module_name(path: Path) -> str:
    parts = path.relative_to(CORE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit(module: str) -> str:
    return module.split(".")[1] if "." in module else module


MODULES = {module_name(p): p for p in CORE.rglob("*.py")}
GRAPH = {m: {i for i in imports(p) if i in MODULES and i != m} for m, p in MODULES.items()}


def test_every_unit_has_a_layer():
    assert {unit(m) for m in MODULES} == set(RANK), "place the new unit of halo_core in LAYERS"


def upward(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} -> {i}" for m, targets in graph.items() for i in targets if RANK[unit(i)] > RANK[unit(m)])


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_a_higher_unit():
    assert not upward(GRAPH)


def test_no_import_cycle():
    assert not cycles(GRAPH)


def test_the_guards_find_a_planted_upward_import_and_cycle():
    planted = {"halo_core.data.a": {"halo_core.evaluation.b"}, "halo_core.evaluation.b": {"halo_core.evaluation.c"},
               "halo_core.evaluation.c": {"halo_core.evaluation.d"}, "halo_core.evaluation.d": {"halo_core.evaluation.b"}}
    assert upward(planted) == ["halo_core.data.a -> halo_core.evaluation.b"]
    assert cycles(planted) == [["halo_core.evaluation.b", "halo_core.evaluation.c", "halo_core.evaluation.d"]]


def test_only_the_rendering_package_draws():
    drawing = sorted(module_name(p) for p in CORE.rglob("*.py") if unit(module_name(p)) != "reports"
                     and any(i.split(".")[0] == "matplotlib" for i in imports(p)))
    assert not drawing


def test_halo_core_never_imports_dagster():
    assert not {f"{p.relative_to(CORE)}: {m}" for p in CORE.rglob("*.py") for m in imports(p)
                if m.split(".")[0] in ("dagster", "dagster_aws", "dagster_k8s")}


def test_the_key_read_count_counts_reads_not_writes():
    from scripts.count_key_reads import key_reads

    assert key_reads('a["x"]\nb.get("y")\nc["z"] = 1\nd[0]\ne.get(k)\nf["u"]["v"]\n') == 4


def test_every_logger_of_halo_core_is_one_dagster_captures():
    """Dagster shows the lines of the loggers under halo_core (deploy/*.yaml managed_python_loggers); progress
    once logged as "halo.progress", and no run log ever showed it. (Ray's own loggers are only quietened.)"""
    def ours(arg) -> bool:
        return (isinstance(arg, ast.Name) and arg.id == "__name__") or (
            isinstance(arg, ast.Constant) and str(arg.value).startswith(("halo_core.", "ray.")))

    named = sorted(f"{p.relative_to(CORE)}:{node.lineno}" for p in CORE.rglob("*.py")
                   for node in ast.walk(ast.parse(p.read_text()))
                   if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "getLogger"
                   and node.args and not ours(node.args[0]))
    assert not named, "log with logging.getLogger(__name__)"
