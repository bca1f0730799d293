"""--compile (trainkit.run.add_run_args, every family): 3 training steps of each family's Task,
built by its train module's build_task, give the same losses compiled as eager, and the
checkpoint files written afterwards hold the same keys (no torch.compile `_orig_mod.` prefix),
so openai's and DDGAN's loaders read them as before. torch.compile on the CPU needs inductor's
C++ toolchain (gcc) and takes tens of seconds per network: the networks are tiny and the test
is in the slow tier."""

import shutil

import numpy as np
import pytest
import torch

from trainkit import checkpoint, data

# DDGAN's R1 on every step (--lazy_reg 1): the R1 path is compiled and checked, and its three steps
# share one graph (with --lazy_reg 2 the R1 and plain steps compiled apart: twice the test's time).
# Compiled kernels fuse and reorder float32 reductions: after 3 Adam steps the losses differ in
# the last few bits, never more than this (relative).
LOSS_RTOL = 1e-4

FAMILIES = {
    "improved_diffusion": ["--image_size", "8", "--image_channels", "1", "--num_channels", "32",
                           "--num_res_blocks", "1", "--channel_mult", "1", "--attention_resolutions", "16",
                           "--num_heads", "1", "--learn_sigma", "True", "--diffusion_steps", "20",
                           "--batch_size", "4", "--data_dir", "unused"],
    "ddgan": ["--dataset", "digits", "--image_size", "8", "--num_channels", "1", "--num_channels_dae", "8",
              "--ch_mult", "1", "--num_res_blocks", "1", "--attn_resolutions", "16", "--nz", "8",
              "--z_emb_dim", "16", "--t_emb_dim", "16", "--n_mlp", "1", "--ngf", "4", "--num_timesteps", "2",
              "--batch_size", "4", "--lazy_reg", "1", "--r1_gamma", "0.02", "--use_ema"],
    "gans": ["--model", "dcgan", "--image_size", "8", "--num_channels", "1", "--nz", "8", "--ngf", "4",
             "--ndf", "4", "--batch_size", "4", "--ema_rate", "0.9", "--r1_gamma", "1", "--lazy_reg", "2",
             "--data_dir", "unused"],
}


def _need_inductor():
    if shutil.which("gcc") is None and shutil.which("g++") is None:
        pytest.skip("torch.compile on the CPU needs a C++ compiler (gcc): none on PATH")


def _task(family, argv):
    import importlib

    train = importlib.import_module(f"{'gans' if family == 'gans' else family}.train")
    parser = train.create_argparser() if hasattr(train, "create_argparser") else train.create_parser()
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    if family == "gans":
        g = torch.Generator().manual_seed(1)
        images = torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8, generator=g)
        return train.build_task(args, data.ImageData(images, None, "synthetic")), args
    if family == "ddgan":
        return train.build_task(args), args
    return train.build_task(args, log=lambda *a: None), args


# the modules each Task calls for training: compiled with --compile, eager without
TRAINING_MODULES = {"improved_diffusion": ("ddp_model",), "ddgan": ("G", "D"), "gans": ("G_ddp", "D_ddp")}


def _run(family, compile_, tmp_path):
    task, args = _task(family, FAMILIES[family] + ["--compile", str(compile_)])
    assert args.compile is compile_
    for name in TRAINING_MODULES[family]:
        assert isinstance(getattr(task, name), torch._dynamo.eval_frame.OptimizedModule) is compile_, name
    g = torch.Generator().manual_seed(2)
    losses = []
    for step in range(3):
        x = torch.rand(args.batch_size, 1, 8, 8, generator=g) * 2 - 1
        # the step's own draws (t: numpy in openai's samplers; z, noise: torch) are the same in both runs
        torch.manual_seed(100 + step)
        np.random.seed(100 + step)
        stats = task.step((x, None), step, 0)
        losses.append({k: float(v[0] / v[1]) if isinstance(v, tuple) else float(v) for k, v in stats.items()
                       if k in ("loss", "mse", "vb", "errD", "errG", "loss_d", "loss_g")})
    run_dir = tmp_path / f"{family}-{compile_}"
    run_dir.mkdir()
    checkpoint.save(str(run_dir), 3, task.state_dicts(), {})
    ck = checkpoint.latest(str(run_dir))
    keys = {prefix: sorted(ck.load(prefix)) for prefix in ck.prefixes() if prefix != "state"}
    return losses, keys


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_compiled_steps_match_eager_and_keep_checkpoint_keys(family, tmp_path):
    _need_inductor()
    eager, eager_keys = _run(family, False, tmp_path)
    try:
        compiled, compiled_keys = _run(family, True, tmp_path)
    except Exception as e:  # inductor's own failure to build here, not a defect of ours
        if "InductorError" in type(e).__name__ or "CppCompileError" in repr(e):
            pytest.skip(f"inductor cannot compile on this machine: {type(e).__name__}")
        raise
    assert all(eager) and len(eager) == 3
    for a, b in zip(eager, compiled):
        assert sorted(a) == sorted(b)
        for k in a:
            assert b[k] == pytest.approx(a[k], rel=LOSS_RTOL, abs=1e-6), (k, eager, compiled)
    assert compiled_keys == eager_keys
    assert not any("_orig_mod" in k for keys in compiled_keys.values() for k in keys if isinstance(k, str))


@pytest.mark.slow
def test_train_throughput_prints_compiled_beside_eager():
    """benchmarks/train_throughput.py --compile: both children run the family's build_task and
    the ratio line is printed (DCGAN at 8 px: inductor builds it in seconds)."""
    import subprocess
    import sys

    import helpers

    _need_inductor()
    proc = subprocess.run([sys.executable, str(helpers.ROOT / "benchmarks" / "train_throughput.py"), "--family", "gans",
                           "--compile", "--steps", "1", "--warmup", "2", "--batch_size", "4", "--flags",
                           "--image_size 8 --ngf 4 --ndf 4 --nz 8"], env=helpers.test_env(), capture_output=True,
                          text=True, timeout=helpers.MAX_TIMEOUT)
    assert proc.returncode == 0, helpers.describe(proc)
    lines = proc.stdout.splitlines()
    assert any(line.startswith("ours ") and "img/s" in line for line in lines), proc.stdout
    assert any(line.startswith("compiled ") and "img/s" in line for line in lines), proc.stdout
    ratio = [line for line in lines if line.startswith("ratio compiled/eager:")]
    assert len(ratio) == 1 and float(ratio[0].split()[2].rstrip("x")) > 0
