"""Public functions with 5+ parameters carry a numpydoc ``Parameters`` section (issue 16).

Walks ``replicate/`` with :mod:`ast` (nothing is imported). A function or method is
public when its name does not start with ``_`` and no component of its module path
starts with ``_`` (``__init__.py`` excepted). ``self``/``cls`` and ``*args``/``**kwargs``
are not counted, and
names starting with ``_`` (private arguments) need no entry. Every parameter name must appear in the section, as a
``name : type`` or ``name`` line, or within ``a, b`` for several.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "replicate"
MIN_PARAMS = 5
# private by the rule, but the error builder every module uses: documented and checked too
ALSO_CHECKED = {("_validation.py", "fail")}


def _public_module(rel: Path) -> bool:
    return not any(part.startswith("_") and part != "__init__.py" for part in rel.parts)


def _param_names(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    a = fn.args
    names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs if x.arg not in ("self", "cls")]
    return names


def parameters_section(doc: str) -> list[str] | None:
    """The lines of the ``Parameters`` section (``None`` without one)."""
    lines = doc.splitlines()
    for i in range(len(lines) - 1):
        if lines[i].strip() == "Parameters" and set(lines[i + 1].strip()) == {"-"}:
            out = []
            for line in lines[i + 2 :]:
                if out and line.strip() and set(line.strip()) == {"-"}:  # the next section's underline
                    out.pop()
                    break
                out.append(line)
            return out
    return None


def documented_names(section: list[str]) -> set[str]:
    """Names on the section's unindented entry lines: ``a``, ``a : int``, ``a, b : int``, ``**kwargs``."""
    indents = [len(x) - len(x.lstrip()) for x in section if x.strip()]
    if not indents:
        return set()
    base = min(indents)
    names: set[str] = set()
    for line in section:
        if line.strip() and len(line) - len(line.lstrip()) == base:
            head = line.split(" : ")[0]
            names.update(n.strip().lstrip("*") for n in head.split(",") if n.strip())
    return names


def problems(root: Path = ROOT) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if not ((_public_module(rel) and not node.name.startswith("_")) or (str(rel), node.name) in ALSO_CHECKED):
                continue
            names = _param_names(node)
            if len(names) < MIN_PARAMS:
                continue
            where = f"replicate/{rel.as_posix()}:{node.lineno}:{node.name}"
            section = parameters_section(ast.get_docstring(node) or "")
            if section is None:
                found.append(f"{where}: no Parameters section ({len(names)} parameters)")
                continue
            missing = [n for n in names if not n.startswith("_") and n not in documented_names(section)]
            if missing:
                found.append(f"{where}: Parameters section lacks {', '.join(missing)}")
    return found


def test_public_functions_with_many_parameters_document_them() -> None:
    found = problems()
    assert not found, "numpydoc Parameters sections missing or incomplete:\n" + "\n".join(found)


def test_the_checker_catches_a_missing_section_and_a_missing_name(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "_private").mkdir(parents=True)
    (pkg / "mod.py").write_text(
        "def bare(a, b, c, d, e):\n    '''No section.'''\n\n"
        "def partial(a, b, *, c=1, d=2, e=3, **kw):\n"
        "    '''Some.\n\n    Parameters\n    ----------\n    a, b : int\n        x.\n    c\n        y.\n\n"
        "    Returns\n    -------\n    d\n        not a parameter entry.\n    '''\n\n"
        "def full(self, a, b, c, d, *args, **kwargs):\n"
        "    '''All.\n\n    Parameters\n    ----------\n    a, b, c\n        x.\n    d : int\n        y.\n"
        "    *args, **kwargs\n        z.\n    '''\n\n"
        "def few(a, b, c, d):\n    '''Four only.'''\n\n"
        "def _private(a, b, c, d, e):\n    pass\n",
        encoding="utf-8",
    )
    (pkg / "_private" / "hidden.py").write_text("def public(a, b, c, d, e):\n    pass\n", encoding="utf-8")
    (pkg / "_helpers.py").write_text("def also(a, b, c, d, e):\n    pass\n", encoding="utf-8")
    found = problems(pkg)
    assert len(found) == 2, found
    assert re.search(r"mod\.py:1:bare: no Parameters section \(5 parameters\)", found[0])
    assert found[1].endswith("partial: Parameters section lacks d, e")
