"""Issue 38's defect "benchmarks rebuild every Task by hand and have drifted": the throughput
benchmark builds each family's Task with the family's own task.build_task, as its train.py does,
so what it times is what training runs (a conditional GAN with its classes, improved diffusion
with its schedule sampler and weight decay from the flags)."""

import importlib.util
import types

import helpers


def _throughput():
    path = helpers.ROOT / "benchmarks" / "train_throughput.py"
    spec = importlib.util.spec_from_file_location("train_throughput", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _build(family, flags=""):
    args = types.SimpleNamespace(family=family, flags=flags, batch_size=4, precision="fp32")
    return _throughput().build_task(args, False)[0]


def test_a_conditional_gan_is_timed_with_its_classes():
    from gans import task

    built = _build("gans", "--model cdcgan")
    assert isinstance(built, task.Task) and built.G.num_classes == 10


def test_improved_diffusions_training_flags_reach_the_timed_task():
    from improved_diffusion import task

    built = _build("improved_diffusion", "--schedule_sampler loss-second-moment --weight_decay 0.05")
    assert isinstance(built, task.Task)
    assert type(built.schedule_sampler).__name__ == "LossSecondMomentResampler"
    assert all(group["weight_decay"] == 0.05 for group in built.opt.param_groups)
