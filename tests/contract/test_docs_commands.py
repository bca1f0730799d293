"""Every command line in README.md and docs/ parses with its entry point's own parser: the flags
exist and their values are in range, so a renamed or removed flag cannot leave a document
telling users to type it. Lines are read from the fenced code blocks; `bash launch/run.sh ...
FLAG_FILE.sh MODULE` lines get the flag file's $MODEL_FLAGS $DIFFUSION_FLAGS $<ROLE>_FLAGS first,
as run.sh passes them, and `source FLAG_FILE.sh` sets those variables for the lines after it."""

import contextlib
import importlib
import io
import re
import shlex
import subprocess

import pytest

import helpers
from trainkit import commands as umbrella

FENCE = re.compile(r"^```[a-z]*\n(.*?)^```", re.S | re.M)
ENTRY = re.compile(r"^(gans|ddgan|improved_diffusion|evaluations|trainkit)\.[a-z_]+$")
SCRIPTS = {"scripts/image_train.py": "improved_diffusion.train", "scripts/image_sample.py": "improved_diffusion.sample",
           "scripts/image_nll.py": "improved_diffusion.nll"}
FLAG_VARS = ("MODEL_FLAGS", "DIFFUSION_FLAGS", "TRAIN_FLAGS", "SAMPLE_FLAGS", "NLL_FLAGS", "INTERPOLATE_FLAGS",
             "EDIT_FLAGS", "EXPORT_FLAGS", "SELFCHECK_FLAGS")


def console_scripts() -> dict:
    """setup.py's console scripts: command -> module."""
    text = (helpers.ROOT / "setup.py").read_text()
    return dict(re.findall(r'"([a-z-]+)=([a-z_.]+):main"', text))


def _documents():
    root = helpers.ROOT
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def flag_file_vars(path) -> dict:
    script = ('source "$0" >/dev/null 2>&1; for v in ' + " ".join(FLAG_VARS)
              + '; do printf "%s=%s\\0" "$v" "${!v-}"; done')
    out = subprocess.run(["bash", "-c", script, str(helpers.ROOT / path)], capture_output=True, text=True).stdout
    return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)


def _parser(module):
    mod = importlib.import_module(module)
    for name in ("create_argparser", "create_parser", "build_parser", "parser"):
        if hasattr(mod, name):
            return getattr(mod, name)()
    if hasattr(mod, "parse_args"):  # trainkit.selfcheck
        return mod
    raise AssertionError(f"{module}: no parser function")


def commands(text):
    """(line number, module, argv) of every entry-point command in the document's code blocks."""
    for block in FENCE.finditer(text):
        first_line = text[:block.start()].count("\n") + 2
        env = {}
        lines = block.group(1).replace("\\\n", " ").split("\n")  # continuation lines joined
        for offset, line in enumerate(lines):
            for part in re.split(r"&&|;|\|(?!\|)", line):
                try:
                    words = shlex.split(part, comments=True)
                except ValueError:
                    continue
                while words and re.fullmatch(r"[A-Z_]+=.*", words[0]) or words[:1] == ["export"]:
                    if words[0] == "export":
                        words = words[1:]
                        continue
                    key, _, value = words.pop(0).partition("=")
                    env[key] = value
                if words[:1] in (["source"], ["."]) and len(words) > 1 and words[1].endswith(".sh"):
                    env.update(flag_file_vars(words[1]))
                    continue
                found = entry(words, env)
                if found:
                    yield first_line + offset, found[0], found[1]


def _expand(words, env):
    out = []
    for w in words:
        if re.fullmatch(r"\$[A-Z_]+", w):
            out += shlex.split(env.get(w[1:], ""))
        else:
            out.append(re.sub(r"\$\{?([A-Za-z_]+)\}?", lambda m: env.get(m.group(1), "X"), w))
    return out


def entry(words, env):
    """(module, argv) when `words` start an entry point, else None."""
    if any("..." in w or "…" in w for w in words):
        return None  # a pattern, not a command
    # `[--flag VALUE]`: an optional part, which must parse too
    words = [w.lstrip("[").rstrip("]") if w.startswith("[") or w.endswith("]") else w for w in words]
    words = [w for w in words if w]
    if words[:1] == ["genbench"] and len(words) > 1 and words[1] in umbrella.COMMANDS:  # genbench COMMAND ...
        return umbrella.COMMANDS[words[1]], _expand(words[2:], env)
    if words and words[0] in console_scripts():
        return console_scripts()[words[0]], _expand(words[1:], env)
    if words[:2] == ["bash", "launch/run.sh"]:
        rest = words[2:]
        while rest and rest[0].startswith("--"):  # run.sh's own multi-node options
            rest = rest[2:]
        if len(rest) < 3 or rest[0] not in ("local", "mpiexec", "torchrun"):
            return None
        rest = rest[2:]
        flags, files = [], []
        while rest and rest[0].endswith(".sh"):
            files.append(rest.pop(0))
        if not rest or not ENTRY.match(rest[0]):
            return None
        module, typed = rest[0], rest[1:]
        role = module.rsplit(".", 1)[1].upper() + "_FLAGS"
        for f in files:
            v = flag_file_vars(f)
            flags += shlex.split(v.get("MODEL_FLAGS", "")) + shlex.split(v.get("DIFFUSION_FLAGS", "")) + \
                shlex.split(v.get(role, ""))
        return module, flags + _expand(typed, env)
    for i, w in enumerate(words):
        if w == "-m" and i + 1 < len(words) and ENTRY.match(words[i + 1]) and any(
                x in ("python", "python3", "torchrun") or x.endswith("python") for x in words[:i]):
            return words[i + 1], _expand(words[i + 2:], env)
        if w in SCRIPTS and i > 0 and words[i - 1] in ("python", "python3"):
            return SCRIPTS[w], _expand(words[i + 1:], env)
    return None


@pytest.mark.parametrize("doc", _documents(), ids=lambda p: p.name)
def test_every_documented_command_line_parses(doc):
    problems, seen = [], 0
    for line, module, argv in commands(doc.read_text()):
        seen += 1
        parser = _parser(module)
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                parser.parse_args(argv)
        except SystemExit as e:
            if e.code:
                problems.append(f"{doc.name}:{line}: {module} {shlex.join(argv)[:200]}\n    "
                                + (err.getvalue().strip().splitlines() or ["?"])[-1])
    assert not problems, "\n".join(problems)
    if doc.name == "README.md":
        assert seen >= 20  # the extraction finds the commands


def test_the_extraction_sees_flag_files_sources_and_bad_flags():
    text = ("```bash\nsource flags/improved_diffusion/cifar10_seed003.sh\n"
            "python scripts/image_train.py $MODEL_FLAGS $DIFFUSION_FLAGS $TRAIN_FLAGS --nosuchflag 1\n"
            "bash launch/run.sh mpiexec 2 flags/gans/cdcgan_digits.sh gans.train --logdir runs/x\n```\n")
    (l1, m1, a1), (l2, m2, a2) = list(commands(text))
    assert (l1, m1) == (3, "improved_diffusion.train")
    assert "--diffusion_steps" in a1 and a1[-2:] == ["--nosuchflag", "1"]
    assert (l2, m2) == (4, "gans.train") and a2[:2] == ["--model", "cdcgan"] and a2[-2:] == ["--logdir", "runs/x"]
    with pytest.raises(SystemExit):
        with contextlib.redirect_stderr(io.StringIO()):
            _parser(m1).parse_args(a1)


def test_every_console_script_is_documented_with_an_example():
    """README's console-script table: one row per setup.py command, naming its module, with an
    example command line (which test_every_documented_command_line_parses parses)."""
    readme = (helpers.ROOT / "README.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z-]+)` \| `([a-z_.]+)` \| `[^`]+` \|$", readme, re.M))
    assert rows == console_scripts() and len(rows) == 17
    table = readme[readme.index("## Console scripts"):readme.index("## Data\n")]
    examples = [m.group(1) for m in re.finditer(r"\| `([a-z-]+ [^`]+)` \|$", table, re.M)]
    parsed = [entry(shlex.split(e), {}) for e in examples]
    assert len(examples) == 17 and all(parsed)
    for module, argv in parsed:
        with contextlib.redirect_stderr(io.StringIO()):
            _parser(module).parse_args(argv)


def test_the_readmes_quoted_flag_file_is_the_files_content():
    """README quotes flags/improved_diffusion/cifar10_seed003.sh; the quote must be the file."""
    readme = (helpers.ROOT / "README.md").read_text()
    quoted = readme[readme.index("still works by hand:"):]
    quoted = FENCE.search(quoted).group(1)
    values = dict(re.findall(r'^([A-Z_]+)="(.*)"$', quoted, re.M))
    actual = flag_file_vars("flags/improved_diffusion/cifar10_seed003.sh")
    assert values and all(actual[k] == v for k, v in values.items()), (values, actual)
