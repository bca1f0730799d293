"""The gans family in the one family shape of issue 38, proved on real files:

- a run trained with --ema_rate is sampled with its EMA (trainkit.checkpoint.sampling_weights),
  also from a state file that records no sample_weights (the defect: gans took `model`);
- the training probe and gans.sample draw the same images for the same seed (one `draw`);
- gans.sample writes its sample info json (trainkit.npz) beside the npz;
- gans/task.py holds the Task and build_task (old names kept), and the Task's declared loss and
  discriminator keys are ones its step logs.
"""

import numpy as np
import pytest
import torch

from _support.entry import main_in_process
from gans import models, sample, task, train, trainer
from gans import script_util as gans_util
from trainkit import checkpoint, npz, run, sampling

TINY = ["--image_size", 8, "--num_channels", 1, "--nz", 4, "--ngf", 4, "--ndf", 4, "--batch_size", 4,
        "--log_interval", 1]


def _images(tmp_path, n=16):
    """A samples npz of n random 8 px grey images: training data without a data set."""
    rng = np.random.default_rng(0)
    return npz.write_samples(str(tmp_path / "data"), rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8))


def _sample(run_dir, out, monkeypatch, capsys, *argv):
    code, err = main_in_process(sample, ["--model_path", run_dir, "--logdir", out, *argv], monkeypatch, capsys)
    assert code == 0, err
    [path] = out.glob("samples_*.npz")
    return path


def _generator(path):
    G, _ = gans_util.load_generator(str(path))
    return G


def test_a_run_trained_with_ema_rate_is_sampled_with_its_ema(tmp_path, monkeypatch, capsys):
    """gans.train --ema_rate 0.5 for 8 steps (0.5^8 < 1%: settled): gans.sample on the run
    directory draws the EMA generator's images, not the raw generator's."""
    run_dir = tmp_path / "run"
    code, err = main_in_process(train, ["--data_dir", _images(tmp_path), *TINY, "--ema_rate", "0.5",
                                        "--max_steps", 8, "--save_interval", 8, "--logdir", run_dir],
                                monkeypatch, capsys)
    assert code == 0, err
    options = run.read_options_file(str(run_dir / "options.json"))  # C6: what evaluation reads
    assert options["loss_keys"] == list(task.Task.loss_keys)
    assert options["discriminator_keys"] == list(task.Task.discriminator_keys)
    ck = checkpoint.resolve(str(run_dir))
    assert ck.step == 8 and checkpoint.sampling_weights(ck) == "ema_0.5_"
    assert gans_util.generator_path(str(run_dir)) == ck.path("ema_0.5_")

    got, _ = npz.read_samples(str(_sample(run_dir, tmp_path / "s", monkeypatch, capsys,
                                          "--num_samples", 6, "--seed", 3)))
    rnd = sampling.PerSampleRandom(3, range(6))
    want, _ = sample.draw(_generator(ck.path("ema_0.5_")), rnd)
    raw, _ = sample.draw(_generator(ck.path("model")), sampling.PerSampleRandom(3, range(6)))
    assert not np.array_equal(want, raw)  # the two generators tell apart
    assert np.array_equal(got, want)


def test_a_state_file_without_sample_weights_still_samples_the_settled_ema(tmp_path):
    """A step saved without the loop's record (an older run): the one rule falls back to the
    settled --ema_rate average, never to the raw generator."""
    torch.manual_seed(0)
    G, D = models.create_models("dcgan", 8, nz=4, ngf=4, ndf=4, channels=1)
    t = task.Task(G, D, device="cpu", ema_rates="0.5")
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    for step in range(8):
        t.step((x, None), step, 0)
    checkpoint.save(str(tmp_path), 8, t.state_dicts(), dict(t.trainer_state(), rng=run.rng_state()))
    ck = checkpoint.resolve(str(tmp_path))
    assert "sample_weights" not in ck.state
    assert gans_util.generator_path(str(tmp_path)) == ck.path("ema_0.5_")
    G, _ = gans_util.load_generator(str(tmp_path))
    for k, v in G.state_dict().items():
        assert torch.equal(v, t.state_dicts()["ema_0.5_"][k]), k


def test_probe_and_sampler_draw_the_same_images_and_the_sampler_records_what_it_did(tmp_path, monkeypatch,
                                                                                      capsys):
    """A conditional G (random labels): Task.probe_images(weights, 5, seed 7) equals the first
    samples of gans.sample --seed 7, labels included, whatever the sampler's batch size; the
    sampler's info json says what it did."""
    torch.manual_seed(0)
    G, D = models.create_models("cdcgan", 8, nz=4, ngf=4, ndf=4, channels=1, num_classes=3)
    with torch.no_grad():  # a fresh G's images are all ~mid-grey: random weights make them differ
        for p in G.parameters():
            p.normal_(0, 0.3)
    t = task.Task(G, D, device="cpu")
    checkpoint.save(str(tmp_path / "run"), 1, t.state_dicts(), dict(t.trainer_state(), rng=run.rng_state()))
    path = _sample(tmp_path / "run", tmp_path / "s", monkeypatch, capsys,
                   "--num_samples", 5, "--seed", 7, "--batch_size", 2)
    images, labels = npz.read_samples(str(path))
    probe_images, probe_labels = t.probe_images(t.G.state_dict(), 5, 7)
    assert np.array_equal(probe_images, images) and np.array_equal(probe_labels, labels)
    assert task.draw is sample.draw  # one function, not two copies that agree today

    info = npz.read_sample_info(str(path))
    assert {k: info[k] for k in ("sampler", "network_evaluations", "num_samples", "seed", "model", "weights")} == \
        {"sampler": "generator", "network_evaluations": 1, "num_samples": 5, "seed": 7, "model": "cdcgan",
         "weights": "model000001.pt"}


def test_task_module_holds_the_task_and_build_task_under_the_old_names_too():
    assert trainer.GANTrainer is task.Task is task.GANTrainer and trainer.write_grid is task.write_grid
    assert train.build_task is task.build_task
    args = train.create_argparser().parse_args([str(a) for a in TINY] + ["--model", "cgan", "--r1_gamma", "1"])
    from trainkit import data

    dataset = data.ImageData(torch.zeros(8, 1, 8, 8, dtype=torch.uint8), torch.arange(8) % 3, "synthetic",
                             classes=["0", "1", "2"])
    built = train.build_task(args, dataset)
    assert isinstance(built, task.Task) and built.G.num_classes == 3 and built.r1_gamma == 1.0


@pytest.mark.parametrize("kind", ["dcgan", "cgan"])
def test_declared_loss_and_discriminator_keys_are_logged_by_the_step(kind):
    """C6: what the loop writes into options.json must name keys the step really logs (R1 on)."""
    conditional = kind in models.CONDITIONAL
    G, D = models.create_models(kind, 8, nz=4, ngf=4, ndf=4, channels=1, num_classes=3 if conditional else 0)
    t = task.Task(G, D, device="cpu", r1_gamma=1.0)
    y = torch.arange(4) % 3 if conditional else None
    stats = t.step((torch.rand(4, 1, 8, 8) * 2 - 1, y), 0, 0)
    assert task.Task.loss_keys == ("loss_d", "loss_g")
    assert set(task.Task.loss_keys) <= set(stats) and set(task.Task.discriminator_keys) <= set(stats)
    assert "loss_g" not in task.Task.discriminator_keys
