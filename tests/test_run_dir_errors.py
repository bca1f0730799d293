"""A run directory whose options.json is damaged is refused by name, by every entry point that
reads it (sampling, nll, interpolation, editing, resume), with one line and a non-zero exit,
and nothing in the directory changes: the default flags are never silently used instead."""

import sys

import pytest

import helpers

sys.path.insert(0, str(helpers.ROOT / "tests" / "faults"))
import faultlib  # noqa: E402

# (run, module, arguments after the run directory's flag)
READERS = [
    ("improved_diffusion", "improved_diffusion.sample", ["--model_path", "{run}", "--num_samples", "2"]),
    ("improved_diffusion", "improved_diffusion.nll", ["--model_path", "{run}", "--data_dir", "{data}"]),
    ("improved_diffusion", "improved_diffusion.interpolate", ["--model_path", "{run}"]),
    ("improved_diffusion", "improved_diffusion.edit", ["--model_path", "{run}", "--images", "{data}"]),
    ("ddgan", "ddgan.sample", ["--model_path", "{run}", "--num_samples", "2"]),
    ("ddgan", "ddgan.interpolate", ["--model_path", "{run}"]),
    ("improved_diffusion", "improved_diffusion.train", "resume"),
    ("ddgan", "ddgan.train", "resume"),
    ("gans", "gans.train", "resume"),
]


def _snapshot(run_dir):
    return {p.relative_to(run_dir): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("family,module,args", READERS, ids=[f"{m}{'-resume' if a == 'resume' else ''}"
                                                             for _, m, a in READERS])
def test_a_damaged_options_json_is_refused_by_name(family, module, args, copy_run, digits, tmp_path):
    run_dir = copy_run(family, tmp_path / "run")
    options = run_dir / "options.json"
    options.write_text("{not json")
    before = _snapshot(run_dir)
    data = digits(16)
    if args == "resume":
        f = faultlib.FAMILIES[family]
        argv = f.argv(data, run_dir, 4)
    else:
        argv = [a.format(run=run_dir, data=data) for a in args] + ["--logdir", str(tmp_path / "out")]
    proc = helpers.py(module, *argv)
    assert proc.returncode != 0, helpers.describe(proc)
    errors = helpers.error_lines(proc)
    assert len(errors) == 1 and f"{options}: not valid JSON (line 1, column 2)" in errors[0], helpers.describe(proc)
    assert _snapshot(run_dir) == before
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.npz"))


def test_options_that_are_not_an_object_and_a_missing_file_are_told_apart(tmp_path):
    from trainkit import run
    from trainkit.errors import UserError

    (tmp_path / "options.json").write_text("[1, 2]")
    with pytest.raises(UserError, match=r"options.json: not a JSON object of flags \(a list\)"):
        run.load_options(str(tmp_path), missing_ok=True)
    empty = tmp_path / "released"
    empty.mkdir()
    assert run.load_options(str(empty), missing_ok=True) == {}  # a released checkpoint: no flags saved
    with pytest.raises(UserError, match="no options.json"):
        run.load_options(str(empty))
