"""Issue 38, item 1's acceptance: evaluations/ names no family. No code in evaluations/*.py
compares a value with a family's package name or keys a dict (or a lookup) by one: what
evaluation needs comes from the run directory (the samples' info json, options.json) and the
flag files, so a new family needs no edit there (tests/e2e/test_toy_family.py adds one)."""

import ast

import helpers


def families() -> set:
    """The family packages: top-level packages with a task.py (the Task a family declares)."""
    return {p.parent.name for p in helpers.ROOT.glob("*/task.py") if (p.parent / "__init__.py").is_file()}


def _strings(node) -> list:
    """The string constants `node` is, or holds as a tuple / list / set (`x in ("a", "b")`)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [c for e in node.elts for c in _strings(e)]
    return []


def family_names_used(source: str, names: set) -> list:
    """(line, use) of each string constant in `names` used in a comparison, as a dict key, or as
    a subscript (`table["gans"]`, `d.get("gans")` is a call: see below)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            candidates = [c for operand in [node.left, *node.comparators] for c in _strings(operand)]
            found += [(c.lineno, f"compared with {c.value!r}") for c in candidates if c.value in names]
        elif isinstance(node, ast.Dict):
            found += [(k.lineno, f"dict key {k.value!r}") for key in node.keys if key is not None
                      for k in _strings(key) if k.value in names]
        elif isinstance(node, ast.Subscript):
            found += [(c.lineno, f"subscript {c.value!r}") for c in _strings(node.slice) if c.value in names]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("get", "pop"):
            found += [(c.lineno, f".{node.func.attr}({c.value!r})") for arg in node.args[:1]
                      for c in _strings(arg) if c.value in names]
    return found


def test_the_families_are_found():
    assert {"gans", "ddgan", "improved_diffusion"} <= families()


def test_the_walk_sees_each_kind_of_use():
    """The checker itself: each way of branching on a family is reported, a mere mention is not."""
    code = ('if package == "ddgan": pass\n'
            'ok = package in ("gans", "other")\n'
            'CONTROL = {"improved_diffusion": 1}\n'
            'x = CONTROL["gans"]\n'
            'y = CONTROL.get("ddgan")\n'
            'text = "trained by ddgan"\n'
            'module = f"{package}.train"\n')
    uses = family_names_used(code, {"gans", "ddgan", "improved_diffusion"})
    assert [line for line, _ in uses] == [1, 2, 3, 4, 5], uses


def test_no_evaluation_module_branches_on_a_family():
    names = families()
    problems = []
    for path in sorted((helpers.ROOT / "evaluations").glob("*.py")):
        for line, use in family_names_used(path.read_text(), names):
            problems.append(f"{path.relative_to(helpers.ROOT)}:{line}: {use}")
    assert problems == [], "\n".join(problems)
