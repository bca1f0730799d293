"""--help of every entry point: every flag has a help line and --help shows the defaults; every
numeric flag is range-checked at parse time, so a bad value is one line naming the flag and the
value (exit 2), never a traceback from torch."""

import argparse
import importlib

import pytest

import helpers

# module -> the function that builds its parser
PARSERS = {
    "improved_diffusion.train": "create_argparser",
    "improved_diffusion.sample": "create_argparser",
    "improved_diffusion.nll": "create_argparser",
    "improved_diffusion.interpolate": "create_argparser",
    "improved_diffusion.edit": "create_argparser",
    "gans.train": "create_argparser",
    "gans.sample": "create_argparser",
    "gans.interpolate": "create_argparser",
    "ddgan.train": "create_parser",
    "ddgan.sample": "create_parser",
    "ddgan.export": "create_parser",
    "ddgan.interpolate": "create_parser",
    "evaluations.compare": "build_parser",
    "evaluations.fid": "build_parser",
    "evaluations.metrics": "create_parser",
    "evaluations.digits_features": "create_parser",
    "evaluations.grid": "create_parser",
    "evaluations.images_to_npz": "create_parser",
    "evaluations.npz_to_images": "create_parser",
    "evaluations.report": "create_parser",
}


def parser_of(module):
    return getattr(importlib.import_module(module), PARSERS[module])()


@pytest.mark.parametrize("module", list(PARSERS))
def test_every_flag_has_a_help_line_and_help_shows_defaults(module):
    parser = parser_of(module)
    actions = [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]
    missing = [a.option_strings[0] if a.option_strings else a.dest for a in actions if not (a.help or "").strip()]
    assert not missing, f"{module}: no help line for {missing}"
    text = parser.format_help()  # also fails on a stray '%' in a help line
    formatter = parser._get_formatter()
    optional = [a for a in actions if a.option_strings and a.default is not argparse.SUPPRESS]
    if any(a.default not in (None, "") for a in optional):
        assert "(default: " in text
    unexplained = []
    for a in optional:
        shown = "%(default)" in formatter._get_help_string(a)  # run.HelpFormatter appends "(default: ...)"
        # an empty or None default gets no suffix: the line itself says what leaving the flag out means
        said = any(w in a.help.lower() for w in ("default", "empty", "required", "''", "none"))
        if not (shown or said or a.required):
            unexplained.append(a.option_strings[0])
    assert not unexplained, f"{module}: neither a default shown nor said for {unexplained}"


@pytest.mark.parametrize("how,target", [
    (helpers.py, "improved_diffusion.train"),
    (helpers.py, "gans.sample"),
    (helpers.script, "scripts/image_sample.py"),  # openai's script name, run by path
])
def test_help_in_a_subprocess_exits_0(how, target):
    proc = how(target, "--help", timeout=120)
    assert proc.returncode == 0, helpers.describe(proc)
    assert "usage:" in proc.stdout and "(default: " in proc.stdout and not proc.stderr.strip(), helpers.describe(proc)


BAD_VALUES = [
    ("improved_diffusion.train", ["--lr", "0"], "--lr", "0 is out of range: must be > 0"),
    ("improved_diffusion.train", ["--dropout", "1.0"], "--dropout", "1.0 is out of range: must be in [0, 1)"),
    ("improved_diffusion.train", ["--microbatch", "-2"], "--microbatch", "-2 is out of range: must be >= -1"),
    ("improved_diffusion.train", ["--ema_rate", "0.9999,1.5"], "--ema_rate", "1.5 is outside [0, 1)"),
    ("improved_diffusion.train", ["--noise_schedule", "quadratic"], "--noise_schedule",
     "'quadratic' is not one of linear, cosine"),
    ("improved_diffusion.train", ["--precision", "fp8"], "--precision", "'fp8' is not one of '', fp32, fp16, bf16"),
    ("improved_diffusion.train", ["--image_channels", "2"], "--image_channels", "2 is out of range: must be 1 or 3"),
    ("improved_diffusion.train", ["--num_heads_upsample", "0"], "--num_heads_upsample", "0 is out of range"),
    ("improved_diffusion.sample", ["--num_samples", "0"], "--num_samples", "0 is out of range: must be >= 1"),
    ("improved_diffusion.sample", ["--ddim_eta", "-0.5"], "--ddim_eta", "-0.5 is out of range: must be >= 0"),
    ("improved_diffusion.interpolate", ["--num_steps", "1"], "--num_steps", "1 is out of range: must be >= 2"),
    ("improved_diffusion.edit", ["--class_label", "-2"], "--class_label", "-2 is out of range: must be >= -1"),
    ("gans.train", ["--beta1", "1"], "--beta1", "1 is out of range: must be in [0, 1)"),
    ("gans.train", ["--lr_d", "nan"], "--lr_d", "'nan' is not a number"),
    ("gans.train", ["--batch_size", "0"], "--batch_size", "0 is out of range: must be >= 1"),
    ("ddgan.interpolate", ["--model_path", "m", "--ch_mult", "1", "0"], "--ch_mult", "0 is out of range"),
    ("ddgan.train", ["--beta_min", "0"], "--beta_min", "0 is out of range: must be > 0"),
    ("evaluations.metrics", ["s.npz", "r.npz", "--k", "0"], "--k", "0 is out of range: must be >= 1"),
    ("evaluations.fid", ["--num-workers", "-1", "a", "b"], "--num-workers", "-1 is out of range: must be >= 0"),
    ("evaluations.grid", ["a.npz", "b.png", "--padding", "-1"], "--padding", "-1 is out of range: must be >= 0"),
    ("evaluations.compare", ["--minutes", "0"], "--minutes", "0 is out of range: must be > 0"),
]


@pytest.mark.parametrize("module,argv,flag,message", BAD_VALUES,
                         ids=[f"{m}{a[-2]}={a[-1]}" for m, a, _, _ in BAD_VALUES])
def test_bad_value_is_refused_at_parse_time_naming_flag_and_value(module, argv, flag, message, capsys):
    parser = parser_of(module)
    with pytest.raises(SystemExit) as e:
        parser.parse_args(argv)
    assert e.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith(f"{parser.prog}: error: argument {flag}: {message}"), err


def test_openai_values_and_defaults_still_parse():
    from improved_diffusion import edit, train
    from improved_diffusion.script_util import model_and_diffusion_defaults

    a = train.create_argparser().parse_args([])
    assert {k: getattr(a, k) for k in model_and_diffusion_defaults()} == model_and_diffusion_defaults()
    assert (a.lr, a.microbatch, a.lr_anneal_steps, a.ema_rate, a.save_interval, a.precision) == \
        (1e-4, -1, 0, "0.9999", 10000, "")
    a = train.create_argparser().parse_args(
        ["--microbatch", "0", "--num_heads_upsample", "-1", "--ema_rate", "0.9999,0.999", "--dropout", "0.3",
         "--noise_schedule", "cosine", "--precision", "bf16", "--use_fp16", "True", "--fp16_scale_growth", "0"])
    assert (a.microbatch, a.num_heads_upsample, a.ema_rate, a.dropout, a.noise_schedule) == \
        (0, -1, "0.9999,0.999", 0.3, "cosine")
    assert edit.create_argparser().parse_args(["--class_label", "-1"]).class_label == -1


def test_ddgan_sample_model_flags_stay_unset_and_say_where_their_value_comes_from():
    from ddgan import sample

    parser = sample.create_parser()
    o = vars(parser.parse_args(["--model_path", "m"]))
    assert o["image_size"] is None and o["centered"] is None and o["ch_mult"] is None
    helps = {a.option_strings[0]: a.help for a in parser._actions if a.option_strings}
    assert helps["--image_size"].endswith("default: the training run's value, else the reference's 32")
    assert helps["--fir_kernel"].endswith("else the reference's 1 3 3 1")
