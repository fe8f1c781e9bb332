"""halo_core's units depend one way (README, Layout): a module imports, at its top or inside a function,
only from its own unit or a lower one in LAYERS; no two modules import each other, even through others;
only the rendering package (halo_core/reports) draws or builds HTML, and nothing else imports matplotlib
on its way; halo_core never imports Dagster. A new unit fails here until it is placed."""

import ast
import re
import subprocess
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "halo_core"
ASSETS = CORE.parent / "halo_assets"
# lowest first; a unit is a subpackage or a top-level module of halo_core ("halo_core": its __init__)
LAYERS = (
    ("halo_core", "errors"),
    ("uris", "records"),
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
    return imports_of(ast.parse(path.read_text()))


def imports_of(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
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


# Every module but the rendering package's: halo_core's others and the Dagster definitions.
OUTSIDE_REPORTS = sorted(p for p in [*CORE.rglob("*.py"), *ASSETS.rglob("*.py")]
                         if not p.is_relative_to(CORE / "reports"))
# The start of an element a page is built of, as a str literal or the literal part of an f-string holds it
# ("<p>", "</td>", '<img alt="' before a {value}); bytes are not pages (survey.cutouts recognises an HTML error
# page by b"<html").
TAG = re.compile(r"</?(?:html|head|body|title|style|script|h[1-6]|p|div|span|table|thead|tbody|tr|td|th|ul|ol|li|"
                 r"img|a|b|i|em|code|pre|br|button|input)(?=[\s/>]|$)", re.I)


def html_built(source: str) -> list[str]:
    """Where ``source`` builds HTML: an import of the html module (escaping is for pages), or a str
    literal holding an element."""
    tree = ast.parse(source)
    found = [f"imports {m}" for m in sorted(imports_of(tree)) if m.split(".")[0] == "html"]
    return found + [f"line {node.lineno}: {TAG.search(node.value).group()}" for node in ast.walk(tree)
                    if isinstance(node, ast.Constant) and isinstance(node.value, str) and TAG.search(node.value)]


def test_only_the_rendering_package_draws():
    drawing = sorted(str(p.relative_to(CORE.parent)) for p in OUTSIDE_REPORTS
                     if any(i.split(".")[0] == "matplotlib" for i in imports(p)))
    assert not drawing


def test_only_the_rendering_package_writes_html():
    """Pages and their fragments are built in halo_core/reports; computing modules hand it their results."""
    building = {str(p.relative_to(CORE.parent)): found for p in OUTSIDE_REPORTS
                if (found := html_built(p.read_text()))}
    assert not building


def test_the_html_guard_finds_a_planted_page_and_passes_reading_one():
    assert html_built("import html\n") == ["imports html"]
    assert html_built("from html import escape\n") == ["imports html", "imports html.escape"]
    assert html_built('x = f"<p>{n} lenses</p>"\n') == ["line 1: <p", "line 1: </p"]
    assert html_built("y = f'<td data-v=\"{v}\">'\n") == ["line 1: <td"]
    assert not html_built('page = head.startswith((b"<!doctype", b"<html"))\n')
    assert not html_built('z = "a <= b, c > d; --set key=<value>"\n')


def test_a_file_name_or_a_result_imports_no_matplotlib():
    """Every module of halo_core but the rendering package, and every Dagster definition, imports without
    matplotlib: the computing modules import halo_core.reports inside the functions that write."""
    code = ("import importlib, pkgutil, sys, halo_assets, halo_core\n"
            "for package in (halo_core, halo_assets):\n"
            "    for m in pkgutil.walk_packages(package.__path__, package.__name__ + '.'):\n"
            "        if not m.name.startswith('halo_core.reports'):\n"
            "            importlib.import_module(m.name)\n"
            "print('matplotlib' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=CORE.parent)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split()[-1] == "False"


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
