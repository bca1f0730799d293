"""A run directory whose options.json is damaged is refused by name, by every entry point that
reads it (sampling, nll, interpolation, editing, resume), with one line and a non-zero exit,
and nothing in the directory changes: the default flags are never silently used instead."""

import pytest

import helpers
from _support import faultlib

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


# ----- sampling flags that contradict the checkpoint ------------------------------------------

def test_flag_contradictions_name_the_flag_and_both_values():
    from trainkit import checkpoint

    found = checkpoint.flag_contradictions({"class_cond": True, "num_channels": 32, "lr": 1e-4},
                                           {"class_cond": False, "num_channels": 32, "image_size": 16},
                                           "RUN/options.json")
    assert found == ["--class_cond True, but RUN/options.json has False"]


def _sd_and_options(run_dir):
    import json

    import torch

    options = json.loads((run_dir / "options.json").read_text())
    newest = sorted(run_dir.glob("model*.pt"))[-1]
    return torch.load(newest, map_location="cpu", weights_only=True), options, newest


@pytest.mark.parametrize("name", ["improved_diffusion", "id_cond"])
def test_the_model_flags_read_from_an_improved_diffusion_checkpoints_tensors(name, trained_run):
    from improved_diffusion import cli

    state_dict, options, _ = _sd_and_options(trained_run(name))
    flags = cli.trained_flags(state_dict)
    assert flags["class_cond"] == options["class_cond"] == (name == "id_cond")
    keys = ["num_channels", "image_channels", "learn_sigma"] + (["num_classes"] if options["class_cond"] else [])
    assert {k: flags[k] for k in keys} == {k: options[k] for k in keys}


def test_a_released_improved_diffusion_file_names_the_flag_its_tensors_contradict(trained_run, tmp_path):
    """No options.json beside the file (openai's released checkpoints): the cause is read from
    the tensors, e.g. the width of the first convolution."""
    import shutil

    from improved_diffusion import cli, sample
    from trainkit.errors import UserError

    state_dict, options, newest = _sd_and_options(trained_run("improved_diffusion"))
    bare = tmp_path / "released" / "model.pt"
    bare.parent.mkdir()
    shutil.copy(newest, bare)
    argv = ["--model_path", str(bare)]
    for key in cli.model_keys():
        value = options[key] if key != "num_channels" else 2 * options["num_channels"]
        argv += [f"--{key}", str(value)]
    args = sample.create_argparser().parse_args(argv)
    with pytest.raises(UserError) as e:
        sample.load_model(args, None)
    wide = 2 * options["num_channels"]
    assert str(e.value).startswith(f"{bare}: model weights do not fit the model built from the flags: "
                                   f"--num_channels {wide}, but the checkpoint has {options['num_channels']} (")


@pytest.mark.parametrize("family,module,flag,value,saved", [
    ("improved_diffusion", "improved_diffusion.sample", "class_cond", "True", "False"),
    ("ddgan", "ddgan.sample", "num_channels_dae", "16", "8"),
])
def test_a_sampling_flag_that_contradicts_the_run_is_named_with_both_values(family, module, flag, value, saved,
                                                                            trained_run, tmp_path):
    run_dir = trained_run(family)
    proc = helpers.py(module, "--model_path", run_dir, f"--{flag}", value, "--num_samples", "2",
                      "--logdir", tmp_path / "out")
    assert proc.returncode != 0, helpers.describe(proc)
    errors = helpers.error_lines(proc)
    assert len(errors) == 1, helpers.describe(proc)
    assert "weights do not fit the model built from the flags: " in errors[0], errors
    assert f"--{flag} {value}, but {run_dir / 'options.json'} has {saved}" in errors[0], errors
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.npz"))


def test_a_contradicting_flag_whose_weights_fit_is_used_and_noted_once(trained_run, tmp_path):
    """--diffusion_steps changes no tensor: the samples are drawn as asked, and the log says
    once that the run trained with another value."""
    import json

    run_dir = trained_run("improved_diffusion")
    trained = json.loads((run_dir / "options.json").read_text())["diffusion_steps"]
    steps = trained - 10
    out = tmp_path / "out"
    proc = helpers.py("improved_diffusion.sample", "--model_path", run_dir, "--diffusion_steps", steps,
                      "--num_samples", "2", "--logdir", out)
    assert proc.returncode == 0, helpers.describe(proc)
    note = f"note: --diffusion_steps {steps}, but {run_dir / 'options.json'} has {trained}"
    assert proc.stdout.count(note) == 1, helpers.describe(proc)
    assert json.loads(next(out.rglob("options.json")).read_text())["diffusion_steps"] == steps
    assert len(list(out.rglob("samples_2x*.npz"))) == 1
