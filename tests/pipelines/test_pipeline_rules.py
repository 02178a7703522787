"""Rules every file under ``src/acne_detection/pipelines/`` keeps (issue 35), read from its syntax
tree: MLflow reaches the pipelines through configuration and ``acne_detection.framework``, never
an ``import mlflow``; and no public function or method outside the ``pipeline.py`` wiring is
longer than ``MAX_CODE_LINES`` lines of code."""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

from tests.conftest import PROJECT_ROOT

PIPELINES = PROJECT_ROOT / "src" / "acne_detection" / "pipelines"
MAX_CODE_LINES = 60
_NOT_CODE = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}


def _sources() -> list[Path]:
    files = sorted(PIPELINES.rglob("*.py"))
    assert len(files) > 20, f"{PIPELINES}: only {len(files)} files found; has the package moved?"
    return files


def _name(path: Path) -> str:
    return str(path.relative_to(PROJECT_ROOT))


def _code_rows(source: str) -> set[int]:
    """The line numbers holding code: a token that is not a comment or a line break (every line
    of a string spanning lines counts)."""
    rows: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in _NOT_CODE:
            rows.update(range(token.start[0], token.end[0] + 1))
    return rows


def _docstring_rows(function: ast.FunctionDef | ast.AsyncFunctionDef) -> set[int]:
    first = function.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return set(range(first.lineno, first.end_lineno + 1))
    return set()


def _is_public(name: str) -> bool:
    """Not ``_private``; special methods (``__call__``) are a class's public face."""
    return not name.startswith("_") or (name.startswith("__") and name.endswith("__"))


def code_lines(source: str) -> list[tuple[str, int]]:
    """Each public function's and method's name (``Class.method`` for a method) and its number of
    code lines, from its ``def`` to its end: no docstring, comment or blank line counted.

    Args:
        source: a module's text.

    Returns:
        ``[(name, code lines), ...]`` in the order the module defines them.
    """
    tree = ast.parse(source)
    rows = _code_rows(source)
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if _is_public(child.name):
                    lines = set(range(child.lineno, child.end_lineno + 1)) - _docstring_rows(child)
                    found.append((prefix + child.name, len(lines & rows)))
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def mlflow_imports(source: str) -> list[tuple[int, str]]:
    """Each ``import mlflow``, ``import mlflow.x`` or ``from mlflow... import``, wherever it sits
    (a function's body included): ``[(line, statement), ...]``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules = [node.module or ""]
        else:
            continue
        if any(m == "mlflow" or m.startswith("mlflow.") for m in modules):
            found.append((node.lineno, ast.unparse(node)))
    return found


def test_the_counts_leave_out_docstrings_comments_and_blank_lines_and_see_methods_and_nested_functions() -> None:
    source = '''
def public(x):
    """A docstring
    of three lines.
    """
    # a comment

    y = (
        x  # a trailing comment
    )

    def inner():
        return """a string
# that is code
"""

    return y


class Thing:
    def method(self):
        return 1

    def _private(self):
        return 2

    def __call__(self):
        return 3
'''
    assert code_lines(source) == [
        ("public", 9),
        ("public.inner", 4),
        ("Thing.method", 2),
        ("Thing.__call__", 2),
    ]


def test_every_kind_of_mlflow_import_is_found_and_other_imports_are_not() -> None:
    source = """
import mlflow
import mlflow.pytorch as mp
from mlflow.tracking import MlflowClient
import kedro_mlflow
from acne_detection.framework.tracking import to_mlflow_metrics
from .mlflow import x

def f():
    from mlflow import log_metric
"""
    assert [line for line, _ in mlflow_imports(source)] == [2, 3, 4, 10]


def test_no_pipeline_file_imports_mlflow() -> None:
    offenders = [
        f"{_name(path)}:{line}: {statement}"
        for path in _sources()
        for line, statement in mlflow_imports(path.read_text(encoding="utf-8"))
    ]
    assert not offenders, (
        "Pipeline code reaches MLflow through the catalog (kedro-mlflow datasets) or acne_detection.framework, "
        "never by importing it:\n" + "\n".join(offenders)
    )


def test_no_public_function_outside_the_wiring_is_longer_than_60_code_lines() -> None:
    measured = {
        (_name(path), name): count
        for path in _sources()
        if path.name != "pipeline.py"
        for name, count in code_lines(path.read_text(encoding="utf-8"))
    }
    assert len(measured) > 50, f"only {len(measured)} public functions measured under {PIPELINES}"
    offenders = [
        f"{file}: {name} has {count} code lines"
        for (file, name), count in sorted(measured.items())
        if count > MAX_CODE_LINES
    ]
    assert not offenders, (
        f"Public functions over {MAX_CODE_LINES} code lines (no docstring, comments or blank lines counted); "
        "split them into named private helpers:\n" + "\n".join(offenders)
    )
