"""The loop's contract and the run-directory policy through the real entry points:

- samplers, nll and interpolation pointed at a training run (--logdir or OPENAI_LOGDIR, as
  openai users do) leave every file of it byte-identical and write into a fresh subfolder;
- `--resume_checkpoint auto` on a folder written by openai's code resumes from its newest step
  and rewrites none of its files; a new run over it is refused;
- a NaN in gans or ddgan stops with one line, and the newest checkpoint holds no NaN;
- resuming on another number of ranks re-derives the data position (no image of the epoch
  seen twice) and gives every rank its own noise (on the self-check: the loop's policy, the
  same for every family);
- a run resumed at its last step trains nothing.
"""

import hashlib
import json
import re

import pytest
import torch

import helpers
from _support import faultlib
from _support.checks import ok
from _support.entry import main_in_process
from trainkit import checkpoint


def digest(directory):
    """sha256 of every file directly in `directory` (subfolders are the samplers' own)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


def train(name, data, logdir, *extra, launcher="local", nproc=1, env=None):
    family = faultlib.FAMILIES[name]
    return helpers.launch(launcher, nproc, family.module, *family.tiny, "--data_dir", data, "--logdir", logdir,
                          *extra, flag_files=[helpers.ROOT / family.flag_file], env=env)


def one_line_error(proc, *fragments):
    assert proc.returncode == 2, helpers.describe(proc)
    lines = [line for line in helpers.error_lines(proc) if not line.startswith("+ ")]
    assert len(lines) == 1 and all(f in lines[0] for f in fragments), helpers.describe(proc)
    return lines[0]


def written_into_subfolder(proc, run_dir, role):
    m = re.search(rf"{re.escape(str(run_dir))} holds another run: writing into (\S+/{role}-\d[\d-]*)", proc.stdout)
    assert m, helpers.describe(proc)
    return m[1]


@pytest.fixture
def runs(copy_run, tmp_path):
    """A private copy of the session's finished 2-step run of each family (conftest.trained_run)."""
    return {name: copy_run(name, tmp_path / "runs" / name) for name in faultlib.FAMILIES}


def test_samplers_pointed_at_the_training_run_rewrite_none_of_its_files(runs, digits):
    before = {name: digest(d) for name, d in runs.items()}
    id_dir = runs["improved_diffusion"]
    env = helpers.test_env(OPENAI_LOGDIR=str(id_dir))  # openai's habit: one log dir for everything
    sample = ok(helpers.launch("local", 1, "improved_diffusion.sample", "--model_path", id_dir, "--num_samples", 2,
                               "--batch_size", 2, "--timestep_respacing", 5, env=env))
    out = written_into_subfolder(sample, id_dir, "samples")
    assert list((id_dir / out.rsplit("/", 1)[1]).glob("samples_2x16x16x1.npz"))
    nll = ok(helpers.launch("local", 1, "improved_diffusion.nll", "--model_path", id_dir, "--num_samples", 1,
                            "--data_dir", digits(16, "test"), env=env))
    assert (id_dir / written_into_subfolder(nll, id_dir, "nll").rsplit("/", 1)[1] / "nll.json").exists()
    # an explicit --logdir naming the run is the same
    written_into_subfolder(ok(helpers.launch("local", 1, "improved_diffusion.sample", "--model_path", id_dir,
                                             "--num_samples", 1, "--timestep_respacing", 2, "--logdir", id_dir)),
                           id_dir, "samples")
    gans_dir = runs["gans"]
    written_into_subfolder(ok(helpers.py("gans.sample", "--model_path", gans_dir, "--num_samples", 4,
                                         "--logdir", gans_dir)), gans_dir, "samples")
    interp = ok(helpers.py("gans.interpolate", "--model_path", gans_dir, "--logdir", gans_dir, "--num_steps", 3))
    assert (gans_dir / written_into_subfolder(interp, gans_dir, "interpolation").rsplit("/", 1)[1]
            / "interpolation.png").exists()
    ddgan_dir = runs["ddgan"]
    written_into_subfolder(ok(helpers.py("ddgan.sample", "--model_path", ddgan_dir, "--num_samples", 2,
                                         "--logdir", ddgan_dir)), ddgan_dir, "samples")
    assert {name: digest(d) for name, d in runs.items()} == before


def test_training_never_starts_over_a_samplers_directory(runs, digits, tmp_path):
    """The other way round: OPENAI_LOGDIR left at a sampling run, then training."""
    out = tmp_path / "samples"
    ok(helpers.py("gans.sample", "--model_path", runs["gans"], "--num_samples", 4, "--logdir", out))
    before = digest(out)
    for resume in ((), ("--resume_checkpoint", "auto")):
        one_line_error(train("gans", digits(16), out, "--max_steps", 1, *resume),
                       f"{out}: holds a samples run (its options.json); training there would rewrite it")
    assert digest(out) == before


def _openai_folder(path):
    """What openai's image_train.py leaves: model/ema/opt files (the newest step with all three),
    log.txt and progress.csv; no state file, no options.json."""
    from improved_diffusion import train as id_train

    argv = [*faultlib.flag_file_argv(helpers.ROOT / faultlib.FAMILIES["improved_diffusion"].flag_file),
            *faultlib.FAMILIES["improved_diffusion"].tiny]
    args = id_train.create_argparser().parse_args(argv)
    model, _ = id_train.create_model_and_diffusion_checked(args)
    path.mkdir()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for step in (10, 20):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01)
        torch.save(model.state_dict(), path / f"model{step:06d}.pt")
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for rate in ("0.99", "0.999"):
        torch.save(model.state_dict(), path / f"ema_{rate}_000020.pt")
    torch.save(opt.state_dict(), path / "opt000020.pt")
    (path / "log.txt").write_text("Logging to openai\n| step | 20 |\n")
    (path / "progress.csv").write_text("loss,step\n0.5,10\n0.4,20\n")


def test_auto_on_an_openai_folder_resumes_its_newest_step_and_overwrites_nothing(digits, tmp_path):
    folder = tmp_path / "openai"
    _openai_folder(folder)
    before = {name: (folder / name).read_bytes() for name in digest(folder)}
    # a new run over it is refused before anything is written
    one_line_error(train("improved_diffusion", digits(16), folder, "--max_steps", 21),
                   f"{folder}: already holds checkpoints (newest step 20)")
    assert {name: (folder / name).read_bytes() for name in digest(folder)} == before
    # `auto` continues its newest step, with its EMA and optimiser
    proc = ok(train("improved_diffusion", digits(16), folder, "--max_steps", 22, "--save_interval", 1,
                    "--resume_checkpoint", "auto"))
    assert re.search(rf"resuming from {re.escape(str(folder))} step 20 \(ema_0.999_, ema_0.99_, model, opt\)",
                     proc.stdout), proc.stdout
    assert "checkpoint without trainer state (openai layout)" in proc.stdout
    for name, content in before.items():
        now = (folder / name).read_bytes()
        if name in ("log.txt", "progress.csv"):
            assert now.startswith(content), f"{name} was rewritten, not appended to"
        else:
            assert now == content, f"{name} was rewritten"
    assert checkpoint.latest(str(folder)).step == 22
    adopted = checkpoint.resolve(str(folder / "state000020.pt"))  # only a state file was added
    assert adopted.state["origin"].startswith("adopted") and adopted.prefixes() == ["ema_0.999_", "ema_0.99_",
                                                                                    "model", "opt"]
    # the adopted step is complete now, so the next start continues the run, not openai's step
    proc = ok(train("improved_diffusion", digits(16), folder, "--max_steps", 23, "--resume_checkpoint", "auto"))
    assert f"resuming from {folder} step 22" in proc.stdout
    # by name, into another directory, as openai's --resume_checkpoint MODEL_FILE
    proc = ok(train("improved_diffusion", digits(16), tmp_path / "other", "--max_steps", 21,
                    "--resume_checkpoint", folder / "model000010.pt"))
    assert f"resuming from {folder} step 10 (model)" in proc.stdout


def _nan_after(monkeypatch, cls, name, calls):
    """Make `cls.name` (a family's one-update method) diverge on call `calls`: NaN weights and
    a NaN loss, as a real divergence leaves them."""
    real = getattr(cls, name)
    count = {"n": 0}

    def diverging(self, *args, **kwargs):
        stats = real(self, *args, **kwargs)
        count["n"] += 1
        if count["n"] >= calls:
            for module in self.modules().values():
                with torch.no_grad():
                    for p in module.parameters():
                        p.fill_(float("nan"))
            key = next(iter(stats))
            stats[key] = stats[key] * float("nan")
        return stats

    monkeypatch.setattr(cls, name, diverging)


@pytest.mark.parametrize("name", ["gans", "ddgan"])
def test_a_nan_stops_with_one_line_and_the_newest_checkpoint_is_finite(name, digits, tmp_path, monkeypatch, capsys):
    from ddgan import train as ddgan_train
    from ddgan.trainer import Trainer
    from gans import train as gans_train
    from gans.trainer import GANTrainer

    family = faultlib.FAMILIES[name]
    module, cls = {"gans": (gans_train, GANTrainer), "ddgan": (ddgan_train, Trainer)}[name]
    _nan_after(monkeypatch, cls, "update", calls=3)
    argv = [*faultlib.flag_file_argv(helpers.ROOT / family.flag_file), *family.tiny, "--data_dir", digits(16),
            "--logdir", tmp_path, "--max_steps", 6, "--save_interval", 1]
    code, err = main_in_process(module, argv, monkeypatch, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "loss is not finite at step 3" in lines[0], err
    assert "last good checkpoint is step 2" in lines[0]
    ck = checkpoint.latest(str(tmp_path))
    assert ck.step == 2 and not list(tmp_path.glob("*000003.p*"))
    for prefix in ck.prefixes():
        tensors = [v for v in _flatten(ck.load(prefix)) if v.is_floating_point()]
        assert tensors and all(torch.isfinite(v).all() for v in tensors), prefix


def _flatten(obj):
    if torch.is_tensor(obj):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _flatten(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _flatten(v)


@pytest.mark.slow
def test_resume_on_another_world_size_rederives_data_and_gives_every_rank_its_noise(digits, tmp_path):
    run_dir = tmp_path / "run"
    common = ["--data_dir", digits(16), "--logdir", run_dir, "--save_interval", 100, "--resume_checkpoint", "auto",
              "--dump"]
    ok(helpers.launch("mpiexec", 2, "trainkit.selfcheck", *common, "--max_steps", 3))
    consumed = []  # (run, rank, indices) of every batch

    def collect(tag, ranks):
        for r in range(ranks):
            for batch in json.loads((run_dir / f"indices_rank{r}.json").read_text())["batches"]:
                consumed.append((tag, r, batch))

    collect("2 ranks", 2)
    one = ok(helpers.launch("local", 1, "trainkit.selfcheck", *common, "--max_steps", 5))
    assert "checkpoint written by 2 rank(s), this run has 1: data position re-derived (epoch 0, batch 6" in one.stdout
    collect("1 rank", 1)
    two = ok(helpers.launch("torchrun", 2, "trainkit.selfcheck", *common, "--max_steps", 7))
    assert "checkpoint written by 1 rank(s), this run has 2: data position re-derived (epoch 0, batch 4" in two.stdout
    collect("2 ranks again", 2)
    # every image of epoch 0 was taken at most once, across ranks and restarts
    seen = [i for _, _, batch in consumed for i in batch]
    assert len(seen) == 3 * 16 + 2 * 8 + 2 * 16 and len(set(seen)) == len(seen)
    # no two ranks draw the same noise after the restart: their RNG streams differ
    state = torch.load(run_dir / "state000007.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    a, b = state["rng"]
    assert not torch.equal(a["torch"], b["torch"]) and not torch.equal(a["numpy"]["keys"], b["numpy"]["keys"])


@pytest.mark.parametrize("name", ["ddgan", "gans"])
def test_resumed_at_max_steps_trains_zero_steps(name, runs, digits):
    run_dir = runs[name]
    checkpoints = {n: h for n, h in digest(run_dir).items() if n.endswith((".pt", ".png"))}
    proc = ok(train(name, digits(16), run_dir, "--max_steps", 2, faultlib.FAMILIES[name].resume_flag, "auto"))
    assert "step 2 is already at or past the last step 2: nothing to train" in proc.stdout
    assert {n: h for n, h in digest(run_dir).items() if n.endswith((".pt", ".png"))} == checkpoints
