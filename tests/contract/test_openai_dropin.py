"""openai/improved-diffusion's scripts and module names work unchanged (issue #16): seed 003's
command lines through bash, a script written against openai's API, and the compatibility
modules' own behaviour. Three subprocess launches in all (four Python processes), on a folder
of 8 images of 8 px."""

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import helpers
from improved_diffusion import fp16_util, logger
from improved_diffusion.image_datasets import load_data
from improved_diffusion.script_util import create_model_and_diffusion, model_and_diffusion_defaults
from trainkit.errors import UserError

# openai's README lines, with a model small enough to train 2 steps in seconds (lr_anneal_steps
# stops openai's loop; --channel_mult is this project's flag for sizes openai has no table for).
FLAG_FILE = """\
MODEL_FLAGS="--image_size 8 --num_channels 32 --num_res_blocks 1 --channel_mult 1,2 --attention_resolutions 4"
DIFFUSION_FLAGS="--diffusion_steps 10 --noise_schedule cosine --learn_sigma True"
TRAIN_FLAGS="--data_dir {data} --lr 1e-4 --batch_size 2 --lr_anneal_steps 2 --log_interval 1"
SAMPLE_FLAGS="--num_samples 3 --batch_size 2 --timestep_respacing 4"
NLL_FLAGS="--data_dir {data} --num_samples 2 --batch_size 2"
"""


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """8 RGB images of 8 px, classes "a" and "b" by openai's file-name rule."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(8):
        pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{'ab'[i % 2]}_{i}.png")
    return folder


def bash(script, cwd, **env):
    environment = helpers.test_env(**env)
    environment.pop("PYTHONPATH")  # the scripts find the package themselves
    return helpers._run(["bash", "-c", script], timeout=300, env=environment, cwd=cwd)


def hashes(folder):
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def test_seed_003_lines_train_then_sample_and_nll_into_the_same_logdir(images, tmp_path):
    flags = tmp_path / "tiny.sh"
    flags.write_text(FLAG_FILE.format(data=images))
    logdir = tmp_path / "log"
    elsewhere = tmp_path / "cwd"  # run by path from a folder that is not the checkout
    elsewhere.mkdir()
    train = bash(f'source {flags}; export OPENAI_LOGDIR={logdir}; '
                 f'python {helpers.ROOT}/scripts/image_train.py $MODEL_FLAGS $DIFFUSION_FLAGS $TRAIN_FLAGS', elsewhere)
    assert train.returncode == 0, helpers.describe(train)
    trained = hashes(logdir)
    names = {str(p) for p in trained}
    assert {"model000002.pt", "ema_0.9999_000002.pt", "opt000002.pt", "log.txt", "progress.csv"} <= names, names
    options = json.loads((logdir / "options.json").read_text())
    assert options["lr_anneal_steps"] == 2 and options["channel_mult"] == "1,2"  # every word of the flags arrived

    model = f"--model_path {logdir}/model000002.pt $MODEL_FLAGS $DIFFUSION_FLAGS"
    evaluate = bash(f'set -e; source {flags}; export OPENAI_LOGDIR={logdir}; '
                    f'python {helpers.ROOT}/scripts/image_sample.py {model} $SAMPLE_FLAGS; '
                    f'python {helpers.ROOT}/scripts/image_nll.py {model} $NLL_FLAGS', elsewhere)
    assert evaluate.returncode == 0, helpers.describe(evaluate)
    # each in a subfolder of its own: the training run's files stay as they were
    (npz,) = logdir.glob("samples-*/samples_3x8x8x3.npz")
    with np.load(npz) as f:
        assert f["arr_0"].shape == (3, 8, 8, 3) and f["arr_0"].dtype == np.uint8
    (terms,) = logdir.glob("nll-*/vb_terms.npz")
    with np.load(terms) as f:
        assert f["arr_0"].shape == (10,)  # one term per diffusion step
    after = hashes(logdir)
    assert {p: after.get(p) for p in trained} == trained
    assert not list(elsewhere.iterdir())  # nothing written into the working folder


OPENAI_STYLE_SCRIPT = """\
import argparse
import json

import torch
import torch.distributed as dist

from improved_diffusion import dist_util, logger
from improved_diffusion.image_datasets import load_data
from improved_diffusion.script_util import (add_dict_to_argparser, args_to_dict, create_model_and_diffusion,
                                            model_and_diffusion_defaults)


def main():
    defaults = dict(data_dir="", batch_size=2)
    defaults.update(model_and_diffusion_defaults())
    parser = argparse.ArgumentParser()
    add_dict_to_argparser(parser, defaults)
    args = parser.parse_args()

    dist_util.setup_dist()
    logger.configure()
    logger.log("creating model and diffusion...")
    model, diffusion = create_model_and_diffusion(**args_to_dict(args, model_and_diffusion_defaults().keys()))
    model.to(dist_util.dev())
    dist_util.sync_params(model.parameters())
    data = load_data(data_dir=args.data_dir, batch_size=args.batch_size, image_size=args.image_size,
                     class_cond=args.class_cond)
    batch, cond = next(data)
    t = torch.randint(0, diffusion.num_timesteps, (batch.shape[0],), device=dist_util.dev())
    losses = diffusion.training_losses(model, batch.to(dist_util.dev()), t, model_kwargs=cond)
    logger.logkv("loss", 1.0)
    for value in losses["loss"]:
        logger.logkv_mean("per_image", value.item())
    logger.dumpkvs()
    gathered = [torch.zeros_like(batch) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, batch)  # openai's sampler gathers so, straight through torch.distributed
    print(json.dumps({"shape": list(batch.shape), "min": batch.min().item(), "max": batch.max().item(),
                      "y": cond["y"].tolist(), "dir": logger.get_dir(), "world": len(gathered)}))


if __name__ == "__main__":
    main()
"""


def test_a_script_written_against_openais_api_runs(images, tmp_path):
    script = tmp_path / "openai_style.py"
    script.write_text(OPENAI_STYLE_SCRIPT)
    logdir = tmp_path / "log"
    proc = helpers._run([sys.executable, script, "--data_dir", images, "--image_size", "32", "--num_channels", "32",
                         "--num_res_blocks", "1", "--attention_resolutions", "8", "--diffusion_steps", "10",
                         "--noise_schedule", "cosine", "--class_cond", "True"], timeout=300, cwd=tmp_path,
                        env=helpers.test_env(OPENAI_LOGDIR=logdir, OPENAI_LOG_FORMAT="log,csv,json"))
    assert proc.returncode == 0, helpers.describe(proc)
    result = json.loads(proc.stdout.splitlines()[-1])  # the only stdout line: no "stdout" format
    assert result["shape"] == [2, 3, 32, 32] and -1 <= result["min"] < result["max"] <= 1
    assert set(result["y"]) <= {0, 1} and result["dir"] == str(logdir) and result["world"] == 1
    assert "creating model and diffusion..." in (logdir / "log.txt").read_text()
    header, row = (logdir / "progress.csv").read_text().splitlines()
    assert header.split(",") == ["loss", "per_image"] and row.startswith("1.0,")
    (record,) = [json.loads(line) for line in (logdir / "progress.json").read_text().splitlines()]
    assert record["loss"] == 1.0 and record["per_image"] > 0
    assert not (logdir / "stats.jsonl").exists()


@pytest.fixture
def fresh_logger(monkeypatch):
    """Each test gets its own current logger (openai's module keeps one globally)."""
    monkeypatch.setattr(logger.Logger, "CURRENT", None)
    monkeypatch.setattr(logger.Logger, "DEFAULT", None)
    yield
    if logger.Logger.CURRENT is not None:
        logger.Logger.CURRENT.close()


def test_logger_means_levels_and_the_default_directory(fresh_logger, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_LOGDIR", str(tmp_path))
    monkeypatch.delenv("OPENAI_LOG_FORMAT", raising=False)
    logger.configure()  # openai's defaults: stdout, log, csv
    assert logger.get_dir() == str(tmp_path)
    for v in (1.0, 2.0, 6.0):
        logger.logkv_mean("loss", v)
    logger.record_tabular("step", 7)
    assert logger.getkvs() == {"loss": 3.0, "step": 7}
    assert logger.dump_tabular() == {"loss": 3.0, "step": 7}
    logger.debug("hidden")
    logger.set_level(logger.DEBUG)
    logger.debug("shown")
    logger.Logger.CURRENT.close()
    assert (tmp_path / "progress.csv").read_text().splitlines() == ["loss,step", "3.0,7"]
    text = (tmp_path / "log.txt").read_text()
    assert "shown" in text and "hidden" not in text and "| loss | 3" in capsys.readouterr().out
    assert not (tmp_path / "progress.json").exists()


def test_unknown_log_format_is_one_line_naming_it(fresh_logger, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_LOG_FORMAT", "stdout,tensorbored")
    with pytest.raises(UserError) as e:
        logger.configure(dir=str(tmp_path))
    assert "\n" not in str(e.value) and "OPENAI_LOG_FORMAT" in str(e.value) and "'tensorbored'" in str(e.value)


def test_tensorboard_format_without_the_package_names_the_install(fresh_logger, tmp_path, monkeypatch):
    monkeypatch.setattr(logger, "_tensorboard_installed", lambda: False)
    monkeypatch.setenv("OPENAI_LOG_FORMAT", "csv,tensorboard")
    with pytest.raises(UserError) as e:
        logger.configure(dir=str(tmp_path))
    assert "\n" not in str(e.value) and 'pip install -e ".[tensorboard]"' in str(e.value)


def test_tensorboard_format_writes_scalars(fresh_logger, tmp_path):
    pytest.importorskip("tensorboard")
    logger.configure(dir=str(tmp_path), format_strs=["tensorboard"])
    logger.logkv("loss", 0.5)
    logger.dumpkvs()
    logger.Logger.CURRENT.close()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert [(s.step, s.value) for s in events.Scalars("loss")] == [(1, 0.5)]


def test_load_data_deterministic_order_and_labels(images):
    data = load_data(data_dir=str(images), batch_size=3, image_size=8, class_cond=True, deterministic=True)
    batches = [next(data) for _ in range(3)]  # 8 images: two batches of 3, then the epoch starts again
    assert [b[1]["y"].tolist() for b in batches] == [[0, 0, 0], [0, 1, 1], [0, 0, 0]]  # a_0 a_2 a_4 a_6 b_1...
    assert torch.equal(batches[0][0], batches[2][0]) and batches[0][0].shape == (3, 3, 8, 8)
    x, cond = next(load_data(data_dir=str(images), batch_size=4, image_size=8))
    assert cond == {} and x.dtype == torch.float32 and -1 <= x.min() < x.max() <= 1


def test_fp16_util_master_params_and_convert_to_fp16():
    kw = model_and_diffusion_defaults()
    kw.update(image_size=8, num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions="4",
              num_heads=1)
    model, _ = create_model_and_diffusion(**kw)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([1, 5])
    model.convert_to_fp16()
    assert model.inner_dtype == torch.float16 and model.input_blocks[0][0].weight.dtype == torch.float16
    params = list(model.parameters())
    master = fp16_util.make_master_params(params)
    assert len(master) == 1 and master[0].dtype == torch.float32 and master[0].numel() == sum(p.numel() for p in params)
    with torch.no_grad():
        assert model(x, t).dtype == torch.float32  # the fp16 torso runs; the output layers stay fp32
    for i, p in enumerate(params):
        p.grad = torch.full_like(p, i)
    fp16_util.model_grads_to_master_grads(params, master)
    assert torch.equal(master[0].grad, torch.cat([torch.full((p.numel(),), float(i)) for i, p in enumerate(params)]))
    with torch.no_grad():
        master[0].add_(1.0)
    fp16_util.master_params_to_model_params(params, master)
    assert all(torch.equal(p.float(), m.to(p.dtype).float())
               for p, m in zip(params, fp16_util.unflatten_master_params(params, master)))
    fp16_util.zero_grad(params)
    assert all(p.grad is None or not p.grad.any() for p in params)
    model.convert_to_fp32()
    assert model.inner_dtype == torch.float32 and model(x, t).dtype == torch.float32


def test_dist_util_load_state_dict_without_a_launcher(tmp_path):
    from improved_diffusion import dist_util

    torch.save({"w": torch.arange(3)}, tmp_path / "m.pt")
    assert torch.equal(dist_util.load_state_dict(str(tmp_path / "m.pt"), map_location="cpu")["w"], torch.arange(3))
    with pytest.raises(UserError, match="missing.pt: cannot read"):
        dist_util.load_state_dict(str(tmp_path / "missing.pt"))
    assert dist_util.dev() == torch.device("cpu") or torch.cuda.is_available()


def test_module_names_resolve_to_this_checkout():
    from improved_diffusion import dist_util, script_util

    root = str(helpers.ROOT)
    assert all(m.__file__.startswith(root) for m in (dist_util, logger, fp16_util, script_util))
    assert callable(script_util.sr_create_model) and "large_size" in script_util.sr_model_and_diffusion_defaults()
    assert os.path.isfile(helpers.ROOT / "scripts" / "image_nll.py")
