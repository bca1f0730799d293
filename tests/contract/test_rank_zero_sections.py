"""Every rank-0-only section of the source runs under `trainkit.dist.rank_zero_only`, so that
a collective issued there (which the other ranks never join: a hang until --dist_timeout)
raises at once in the tests, which set TRAINKIT_COLLECTIVE_GUARD=1 (tests/conftest.py).

A section is the body of `if dist.is_main():` / `if dist.rank() == 0:` (alone or and-ed with
other conditions), the rest of a block after `if not dist.is_main(): return`, and the chosen
branch of `x if dist.is_main() else y` when it calls something. Its statements must be
`with dist.rank_zero_only(...)` blocks, unless the section is in ALLOWED with a reason."""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGES = ("trainkit", "evaluations", "gans", "ddgan", "improved_diffusion", "benchmarks")

# (file, text of the section's first line) -> one-word reason it needs no guard
ALLOWED = {
    # rank_zero_decides runs fn under the guard itself; outside it there is only the error
    # hand-off to broadcast_object, which every rank joins
    ("trainkit/dist.py", "if is_main():"): "implementation",
}


def _name(func):
    """`f` of `f(...)` or of `module.f(...)`."""
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)


def _is_rank0_test(node) -> bool:
    """`dist.is_main()`, `is_main()`, `dist.rank() == 0` (or `0 == dist.rank()`)."""
    if isinstance(node, ast.Call):
        return _name(node.func) == "is_main"
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.Eq):
        sides = [node.left, node.comparators[0]]
        zero = any(isinstance(s, ast.Constant) and s.value == 0 for s in sides)
        rank = any(isinstance(s, ast.Call) and _name(s.func) == "rank" for s in sides)
        return zero and rank
    return False


def _positive(test) -> bool:
    """The branch runs on rank 0 alone: the rank-0 test, or it and-ed with others."""
    if _is_rank0_test(test):
        return True
    return isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And) and any(_is_rank0_test(v) for v in test.values)


def _negative(test) -> bool:
    """`not <rank-0 test>`, alone or or-ed with others: its early exit leaves rank 0 alone below."""
    def neg(n):
        return isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.Not) and _is_rank0_test(n.operand)
    either = isinstance(test, ast.BoolOp) and isinstance(test.op, ast.Or)
    return neg(test) or (either and any(neg(v) for v in test.values))


def _guarded(stmt) -> bool:
    if not isinstance(stmt, ast.With):
        return False
    for item in stmt.items:
        call = item.context_expr
        if isinstance(call, ast.Call) and _name(call.func) == "rank_zero_only":
            return True
    return False


def _exits(body) -> bool:
    return bool(body) and isinstance(body[-1], (ast.Return, ast.Continue, ast.Raise))


def _trivial(stmt) -> bool:
    """A statement that does no work: pass, a docstring, a bare return of a name or constant."""
    if isinstance(stmt, ast.Pass):
        return True
    if isinstance(stmt, ast.Return):
        return stmt.value is None or isinstance(stmt.value, (ast.Constant, ast.Name))
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)


def _calls(node) -> bool:
    return any(isinstance(n, ast.Call) for n in ast.walk(node))


def sections(path):
    """(line, first line's text, statements) of each rank-0-only section in `path`."""
    source = open(path).read()
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if not isinstance(block, list):
                continue
            for i, stmt in enumerate(block):
                if isinstance(stmt, ast.If) and _positive(stmt.test):
                    found.append((stmt.lineno, lines[stmt.lineno - 1].strip(), stmt.body))
                elif isinstance(stmt, ast.If) and _negative(stmt.test) and _exits(stmt.body) and not stmt.orelse:
                    found.append((stmt.lineno, lines[stmt.lineno - 1].strip(), block[i + 1:]))
        if isinstance(node, ast.IfExp) and _is_rank0_test(node.test) and _calls(node.body):
            found.append((node.lineno, lines[node.lineno - 1].strip(), [ast.Expr(node.body)]))
    return found


def unguarded():
    bad = []
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for name in sorted(files):
                if not name.endswith(".py"):
                    continue
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, ROOT)
                for line, text, body in sections(path):
                    if (rel, text) in ALLOWED:
                        continue
                    if any(not (_guarded(s) or _trivial(s)) for s in body):
                        bad.append(f"{rel}:{line}: {text}")
    return bad


def test_every_rank_zero_section_runs_under_the_guard():
    bad = unguarded()
    assert not bad, ("rank-0-only code outside `with dist.rank_zero_only(...)` (a collective there would hang "
                     "the other ranks):\n" + "\n".join(bad))


def test_the_walk_finds_each_form_of_section(tmp_path):
    # the checker itself: each form it must see is seen, and a guarded body passes
    src = tmp_path / "m.py"
    src.write_text(
        "def f(dist):\n"
        "    if dist.is_main():\n"
        "        work()\n"
        "    if dist.rank() == 0 and ok:\n"
        "        with dist.rank_zero_only('x'):\n"
        "            work()\n"
        "    if not dist.is_main():\n"
        "        return\n"
        "    work()\n"
        "    y = work() if dist.is_main() else None\n")
    found = {line: body for line, _, body in sections(str(src))}
    assert sorted(found) == [2, 4, 7, 10]
    assert not all(_guarded(s) for s in found[2])
    assert all(_guarded(s) for s in found[4])
    assert not all(_guarded(s) or _trivial(s) for s in found[7])


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_exist(package):
    # a renamed package would make the walk pass by finding nothing
    assert os.path.isdir(os.path.join(ROOT, package))
