"""The library's boundaries, enforced: each concern has one module, and this test fails when another
module starts doing that module's work by hand."""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterator
from pathlib import Path

LIBRARY = Path(__file__).resolve().parents[2] / "include" / "strongroom"


@functools.cache
def _modules() -> dict[str, ast.Module]:
    return {path.stem: ast.parse(path.read_text(), str(path)) for path in sorted(LIBRARY.glob("*.py"))}


def _imports(tree: ast.Module) -> set[str]:
    """Every module this one imports, at the top or inside a function (``strongroom.x`` as ``x``)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "strongroom":
                found |= {alias.name for alias in node.names}
            else:
                found.add(node.module.removeprefix("strongroom."))
        elif isinstance(node, ast.Import):
            found |= {alias.name.removeprefix("strongroom.") for alias in node.names}
    return found


def test_only_storage_talks_to_s3() -> None:
    """No module but ``storage`` imports boto3/botocore or reaches for a store's S3 client."""
    offenders = []
    for name, tree in _modules().items():
        if name == "storage":
            continue
        for imported in _imports(tree):
            # the adapter builds the clients (from Airflow connections) and hands them to ObjectStore
            if imported.split(".")[0] in ("boto3", "botocore") and name != "airflow_adapter":
                offenders.append(f"{name} imports {imported}")
        for node in ast.walk(tree):
            # the adapter builds a plain connection's client from a boto3 session (``session.client``)
            builds = name == "airflow_adapter" and isinstance(node, ast.Attribute) and node.attr == "client" \
                and isinstance(node.value, ast.Name) and node.value.id == "session"
            if isinstance(node, ast.Attribute) and node.attr in ("client", "data_client", "_fail") and not builds:
                offenders.append(f"{name}:{node.lineno} uses .{node.attr}")
    assert offenders == []


def test_only_the_adapter_imports_airflow() -> None:
    offenders = [name for name, tree in _modules().items()
                 if name != "airflow_adapter" and any(i.split(".")[0] == "airflow" for i in _imports(tree))]
    assert offenders == []


def test_library_modules_import_each_other_without_a_loop() -> None:
    modules = _modules()
    graph = {name: {i for i in _imports(tree) if i in modules} - {name} for name, tree in modules.items()}
    loops: list[list[str]] = []
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                loops.append([*path[path.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert loops == []


# Only ``layout`` names the bucket's top-level prefixes and the folders under a database or a source, and
# writes the time in a key name.
BUCKET_PREFIXES = ("databases/", "objects/", "status/", "audit/", "restore-tests/", "leases/", "platform/")
INNER_FOLDERS = ("/manifests/", "/pending/")
FOLDERS_AFTER_A_NAME = ("data/", "manifests/", "pending/", "content/", "points/", "partial/")  # f"{p}data/"
KEY_TIME = ("%Y%m%dT%H%M%S", r"\d{8}T\d{6}Z")


def _code_strings(tree: ast.Module) -> Iterator[tuple[ast.Constant, ast.AST | None]]:
    """Every string constant outside docstrings (prose may name keys, code may not), with the part of the
    f-string before it (``None`` for a plain literal or the first part)."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    in_fstrings = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            in_fstrings.update({id(part): before for before, part in zip([None, *node.values], node.values,
                                                                         strict=False)})
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node, in_fstrings.get(id(node))


def test_only_layout_spells_keys() -> None:
    """No module but ``layout`` writes a key prefix or a key's time by hand: not as a literal, a pattern, nor
    the constant part of an f-string (``f"databases/{db}/..."``, ``f"{prefix}manifests/"``, ``f"{t:%Y...}"``)."""
    offenders = []
    for name, tree in _modules().items():
        if name == "layout":
            continue
        for node, before in _code_strings(tree):
            text = node.value
            if (text.lstrip("^").startswith(BUCKET_PREFIXES) or any(f in text for f in INNER_FOLDERS)
                    or any(t in text for t in KEY_TIME)
                    or (isinstance(before, ast.FormattedValue) and text.startswith(FOLDERS_AFTER_A_NAME))):
                offenders.append(f"{name}:{node.lineno} {text!r}")
    assert offenders == []


# Only ``envelope`` builds a cipher or a zstd (de)compressor for stored bytes: every flow that seals or
# unseals calls it. bench/ is held to the same rule: a benchmark measures the pipeline the product runs.
ROOT = LIBRARY.parents[1]
SEALING_DIRS = ("include/strongroom", "dags", "plugins", "bench")
CIPHER_MODULES = ("cryptography.hazmat.primitives.ciphers", "zstandard")


def _sources(*dirs: str) -> dict[str, ast.Module]:
    """Every Python file under ``dirs`` (recursively), parsed, by its path from the repository root."""
    return {str(path.relative_to(ROOT)): ast.parse(path.read_text(), str(path))
            for folder in dirs for path in sorted((ROOT / folder).rglob("*.py"))}


def _imported_names(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """Every dotted name an import statement brings in, at the top or inside a function: ``import a.b`` is
    ``a.b``, ``from a import b`` is ``a`` and ``a.b`` (``b`` may be a module or a name)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.lineno, node.module
            yield from ((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)


def test_only_the_envelope_builds_ciphers_and_compressors() -> None:
    """No module but ``envelope`` imports ``zstandard``, ``cryptography.hazmat.primitives.ciphers`` (AES-GCM
    and the rest) or a name ``AESGCM``: sealing and unsealing stored bytes happens in one place."""
    offenders = sorted({
        f"{path}:{line} imports {name}"
        for path, tree in _sources(*SEALING_DIRS).items() if path != "include/strongroom/envelope.py"
        for line, name in _imported_names(tree)
        if name.startswith(CIPHER_MODULES) or name.rsplit(".", 1)[-1] == "AESGCM"
    })
    assert offenders == []


def test_only_the_cli_speaks_of_its_flags() -> None:
    """The library names settings (``clean``), in backticks so that each surface can say its own words
    (``strongroom.errors.worded``): no message outside ``cli`` names a ``--flag``. Arguments of the
    PostgreSQL tools (``--clean``, or ``pg_restore --list`` in a message) and CSS custom properties
    (``--sr-fg:``) are not ours."""
    tools = "(?<!pg_restore )(?<!pg_dump )(?<!pg_dumpall )(?<!psql )"
    flag = re.compile(r"(?<![\w-])(?<!var\()" + tools + r"--[a-z][a-z-]*(?![a-z-]|:)")
    offenders = []
    for name, tree in _modules().items():
        if name == "cli":
            continue
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                      and node.body and isinstance(node.body[0], ast.Expr)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
                    and " " in node.value and flag.search(node.value)):
                offenders.append(f"{name}:{node.lineno} {flag.search(node.value).group(0)}")
    assert offenders == []


def _exits_loop(statements: list[ast.stmt]) -> bool:
    """Whether these statements leave the loop around them (``return`` or ``break``), nested functions and
    inner loops aside."""
    todo: list[ast.AST] = list(statements)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Return | ast.Break):
            return True
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.For | ast.While):
            todo.extend(ast.iter_child_nodes(node))
    return False


def test_only_regions_falls_back_from_one_region_to_the_next() -> None:
    """"The primary, else the next region that answers" is :func:`strongroom.regions.first_answer`: no other
    module loops over regions catching errors and leaving the loop once one region served. Loops that visit
    every region (replication, prune, status) never leave early, so they pass."""
    offenders = []
    for name, tree in _modules().items():
        if name == "regions":
            continue
        for loop in ast.walk(tree):
            if not isinstance(loop, ast.For) or not any(w in ast.unparse(loop.iter) for w in ("region", "candidates")):
                continue
            catches = any(isinstance(node, ast.Try) and node.handlers for node in ast.walk(loop))
            if catches and _exits_loop(loop.body):
                offenders.append(f"{name}:{loop.lineno} for {ast.unparse(loop.target)} in {ast.unparse(loop.iter)}")
    assert offenders == []


def test_a_data_key_is_wrapped_and_unwrapped_in_one_place() -> None:
    """``envelope.wrap_key``/``unwrap_key`` on a snapshot's data key: only in ``catalog`` (the manifest wraps it for
    each region and unwraps it; the object container, ``envelope`` itself, carries its own)."""
    offenders = sorted(
        f"{name}.py:{node.lineno} calls {node.func.attr}"
        for name, tree in _modules().items() if name not in {"catalog", "envelope"}
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        and node.func.attr in {"wrap_key", "unwrap_key"}
    )
    assert offenders == []
