"""The DDGAN update in-process: R1, gradient accumulation, lr schedule, refusals, weight loading."""


import pytest
import torch

from ddgan import script_util, train, trainer
from ddgan.diffusion import Diffusion
from ddgan.discriminator import DiscriminatorSmall
from ddgan.ncsnpp import GeneratorConfig, NCSNpp
from trainkit.errors import UserError

TINY_FLAGS = ["--image_size", "8", "--num_channels", "1", "--num_channels_dae", "8",
              "--ch_mult", "1", "2", "--num_res_blocks", "1", "--attn_resolutions", "4",
              "--nz", "4", "--z_emb_dim", "8", "--t_emb_dim", "8", "--n_mlp", "1", "--ngf", "2",
              "--num_timesteps", "3", "--dataset", "digits"]


def options(*extra):
    return vars(train.create_parser().parse_args(TINY_FLAGS + list(extra)))


def test_parser_keeps_reference_names_defaults_and_quirks():
    o = vars(train.create_parser().parse_args(["--ch_mult", "1", "2", "2", "2"]))
    expected = dict(seed=1024, image_size=32, num_channels=3, centered=True, use_geometric=False,
                    beta_min=0.1, beta_max=20.0, num_channels_dae=128, n_mlp=3, num_res_blocks=2,
                    attn_resolutions=[16], dropout=0.0, resamp_with_conv=True, conditional=True,
                    fir=True, fir_kernel=[1, 3, 3, 1], skip_rescale=True, resblock_type="biggan",
                    progressive="none", progressive_input="residual", progressive_combine="sum",
                    embedding_type="positional", fourier_scale=16.0, not_use_tanh=False,
                    exp=None, dataset="cifar10", nz=100, num_timesteps=4,
                    z_emb_dim=256, t_emb_dim=256, batch_size=128, num_epoch=1200, ngf=64,
                    lr_g=1.5e-4, lr_d=1e-4, beta1=0.5, beta2=0.9, no_lr_decay=False,
                    use_ema=False, ema_decay=0.9999, r1_gamma=0.05, lazy_reg=None,
                    save_content=False, save_content_every=50, save_ckpt_every=25,
                    ch_mult=[1, 2, 2, 2], grad_accum=1, resume_checkpoint="")
    assert {k: o[k] for k in expected} == expected
    # --exp: the reference's default name is experiment_cifar_default, but its folder is used only
    # when --exp is given (left out, a run goes to runs/ddgan-<time> as every family's)
    assert "experiment_cifar_default" in train.create_parser().format_help()
    # store_false flags: passing them turns the option off, as in train_ddgan.py
    o = vars(train.create_parser().parse_args(["--ch_mult", "1", "--fir", "--centered"]))
    assert o["fir"] is False and o["centered"] is False
    # typed lists (the reference left these as strings)
    o = vars(train.create_parser().parse_args(["--ch_mult", "1", "--attn_resolutions", "16,8",
                                               "--fir_kernel", "1", "3", "3", "1"]))
    assert o["attn_resolutions"] == [16, 8] and o["fir_kernel"] == [1, 3, 3, 1]


@pytest.mark.parametrize("extra,message", [
    (["--batch_size", "16", "--grad_accum", "3"], "--grad_accum 3 does not divide --batch_size 16"),
    (["--num_timesteps", "0"], "--num_timesteps: 0 must be a positive"),
    (["--num_timesteps", "-2"], "--num_timesteps: -2 must be a positive"),
    (["--batch_size", "12", "--grad_accum", "2"], "multiple of 4"),
])
def test_bad_options_refused(extra, message):
    with pytest.raises(UserError, match=message.replace("-", r"\-")):
        train.check_options(options(*extra))


@pytest.mark.parametrize("flag,value,message", [
    ("--grad_accum", "0", "must be >= 1"), ("--lazy_reg", "0", "must be >= 1"),
    ("--num_epoch", "0", "must be >= 1"), ("--ema_decay", "1", "must be in [0, 1)"),
    ("--lr_g", "0", "must be > 0"), ("--num_process_per_node", "0", "must be >= 1"),
])
def test_out_of_range_flags_refused_at_parse_time(flag, value, message, capsys):
    with pytest.raises(SystemExit) as e:
        options(flag, value)
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"argument {flag}: {value} is out of range: {message}" in err, err


def test_r1_penalty_equals_hand_computed_gradient_norm():
    """D(x) = sum(a * x^2) + sum(b * x): dD/dx = 2 a x + b, so R1 = g/2 mean_i |2 a x_i + b|^2;
    and its gradient in a is what autograd gives through create_graph."""
    torch.manual_seed(0)
    a = torch.randn(1, 2, 3, 3, requires_grad=True)
    b = torch.randn(1, 2, 3, 3)
    x = torch.randn(5, 2, 3, 3, requires_grad=True)
    d_out = (a * x ** 2 + b * x).flatten(1).sum(1)
    r1 = trainer.r1_penalty(d_out, x, gamma=0.3)
    grad = (2 * a * x + b).detach()
    hand = 0.3 / 2 * grad.pow(2).flatten(1).sum(1).mean()
    assert r1.item() == pytest.approx(hand.item(), rel=1e-6)
    r1.backward()
    # d/da of g/2 mean |2 a x + b|^2 = g/2 * mean_i 2 (2 a x_i + b) 2 x_i
    hand_grad = (0.3 / 2 * 2 * (2 * a * x + b) * 2 * x).mean(0, keepdim=True).detach()
    assert torch.allclose(a.grad, hand_grad, atol=1e-5)


def test_cosine_lr_matches_torch_scheduler():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=1.6e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 10, eta_min=1e-5)
    for epoch in range(11):
        assert trainer.cosine_lr(1.6e-4, epoch, 10) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9)
        opt.step()
        sched.step()
    assert trainer.cosine_lr(1.6e-4, 3, 10, decay=False) == 1.6e-4


def make_trainer(o, seed=0):
    torch.manual_seed(seed)
    g = NCSNpp(GeneratorConfig.from_options(o))
    d = DiscriminatorSmall(nc=2 * o["num_channels"], ngf=o["ngf"], t_emb_dim=o["t_emb_dim"])
    with torch.no_grad():  # fresh init is ~0 at the outputs; random weights give real gradients
        for p in list(g.parameters()) + list(d.parameters()):
            p.normal_(0, 0.3)
    return trainer.Trainer(o, g, d, Diffusion(o["num_timesteps"]), torch.device("cpu"))


def _grads(module):
    return torch.cat([p.grad.flatten() for p in module.parameters()])


def _d_and_g_gradients(o, x, noises):
    """D's and G's gradients of one update (d_step, then g_step) of a fresh trainer on `x`, with
    the random numbers of the two half-steps fixed to `noises` (what draw_step_noise returns)."""
    tr = make_trainer(o)
    draws = iter(noises)
    real = trainer.draw_step_noise
    trainer.draw_step_noise = lambda *a: next(draws)
    try:
        tr.d_step(x)
        d = _grads(tr.d_raw)
        tr.g_step(x)
        g = _grads(tr.g_raw)
    finally:
        trainer.draw_step_noise = real
    return d, g


def test_gradient_accumulation_averages_the_micro_batches_updates():
    """--grad_accum K gives the mean of the gradients each micro-batch would give as a batch of
    its own, with the random numbers it drew (R1 included). It is not the whole batch's update:
    the discriminator's minibatch-std layer (groups of 4 images) sees one micro-batch at a time,
    so K changes the update, not only the memory."""
    torch.manual_seed(3)
    x = torch.rand(16, 1, 8, 8) * 2 - 1
    o = options("--batch_size", "16", "--grad_accum", "2", "--lazy_reg", "1", "--r1_gamma", "0.5")
    o["lr_d"] = 1e-30  # G's gradient is then taken through the same D in every run
    noises = [trainer.draw_step_noise(x, o["num_timesteps"], o["nz"]) for _ in range(2)]  # D's, then G's
    accumulated = _d_and_g_gradients(o, x, noises)
    single = dict(o, batch_size=8, grad_accum=1)
    halves = [_d_and_g_gradients(single, x[i * 8:(i + 1) * 8], [{k: v[i * 8:(i + 1) * 8] for k, v in n.items()}
                                                                for n in noises]) for i in range(2)]
    whole = _d_and_g_gradients(dict(o, grad_accum=1), x, noises)
    for which, name in enumerate(("D", "G")):
        mean = (halves[0][which] + halves[1][which]) / 2
        assert torch.allclose(accumulated[which], mean, rtol=1e-4, atol=1e-6), name
        assert not torch.allclose(whole[which], mean, rtol=1e-3, atol=1e-4), f"{name}: minibatch-std had no effect"


def test_lazy_r1_schedule_and_detached_generator_in_d_step():
    o = options("--batch_size", "4", "--lazy_reg", "3", "--r1_gamma", "1.0")
    tr = make_trainer(o)
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    with_r1 = []
    for _ in range(5):
        for p in tr.g_raw.parameters():
            p.grad = None
        stats = tr.d_step(x)
        with_r1.append("r1" in stats)
        # D's loss never reaches the generator
        assert all(p.grad is None for p in tr.g_raw.parameters())
        tr.g_step(x)
        tr.updates += 1
    assert with_r1 == [True, False, False, True, False]
    # in the G step D is frozen: no D gradients from errG
    tr.opt_d.zero_grad(set_to_none=True)
    tr.g_step(x)
    assert all(p.grad is None for p in tr.d_raw.parameters())
    assert all(p.requires_grad for p in tr.d_raw.parameters())


def test_ema_starts_from_weights_after_first_update():
    o = options("--batch_size", "4", "--use_ema", "--ema_decay", "0.5")
    tr = make_trainer(o)
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    tr.update(x)
    after_first = {n: p.detach().clone() for n, p in tr.g_raw.named_parameters()}
    sd = tr.ema.state_dict(0.5, tr.g_raw)
    assert all(torch.equal(sd[n], after_first[n]) for n in after_first)
    tr.update(x)
    sd = tr.ema.state_dict(0.5, tr.g_raw)
    for n, p in tr.g_raw.named_parameters():
        assert torch.allclose(sd[n], 0.5 * after_first[n] + 0.5 * p.detach(), atol=1e-7)


def test_load_weights_strips_module_prefix_and_names_mismatching_keys():
    o = options()
    g = script_util.build_generator(o)
    released = {"module." + k: v.clone() for k, v in g.state_dict().items()}
    g2 = script_util.build_generator(o)
    script_util.load_weights(g2, released, "netG_1200.pth")
    assert all(torch.equal(a, b) for a, b in zip(g.state_dict().values(), g2.state_dict().values()))
    other = script_util.build_generator(options("--ch_mult", "1", "2", "2"))
    with pytest.raises(UserError) as e:
        script_util.load_weights(other, g.state_dict(), "model000010.pt")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("model000010.pt: generator weights do not fit")
    assert "missing: all_modules." in msg and "--ch_mult" in msg


def test_discriminator_choice_follows_reference_datasets():
    assert script_util.discriminator_class(options("--dataset", "cifar10")).__name__ == "DiscriminatorSmall"
    big = dict(options(), dataset="celeba_256", image_size=256)
    assert script_util.discriminator_class(big).__name__ == "DiscriminatorLarge"
    assert script_util.discriminator_class(dict(big, dataset="faces")).__name__ == "DiscriminatorLarge"
    with pytest.raises(UserError, match="too small"):
        script_util.build_discriminator(dict(options(), image_size=4))


def test_d_steps_runs_that_many_discriminator_updates_per_generator_update():
    """--d_steps K: K Adam steps of D, each on fresh t and noises, then one of G. With K = 1
    (the default, the reference's) update() is exactly d_step then g_step."""
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    assert options()["d_steps"] == 1
    by_hand = make_trainer(options("--batch_size", "4"))
    torch.manual_seed(5)
    by_hand.d_step(x)
    by_hand.g_step(x)
    default = make_trainer(options("--batch_size", "4"))
    torch.manual_seed(5)
    default.update(x)
    for a, b in zip(list(by_hand.g_raw.parameters()) + list(by_hand.d_raw.parameters()),
                    list(default.g_raw.parameters()) + list(default.d_raw.parameters())):
        assert torch.equal(a, b)

    tr = make_trainer(options("--batch_size", "4", "--d_steps", "3"))
    seen = []
    d_step = tr.d_step

    def spy(xb):
        stats = d_step(xb)
        seen.append(float(stats["errD"]))
        return stats

    tr.d_step = spy
    for _ in range(2):
        tr.update(x)

    def adam_steps(opt):
        return {int(s["step"]) for s in opt.state.values()}

    assert adam_steps(tr.opt_d) == {6} and adam_steps(tr.opt_g) == {2} and tr.updates == 2
    assert len(set(seen)) == 6  # fresh noise (and new D weights) each time, not one update repeated
    with pytest.raises(SystemExit):
        options("--d_steps", "0")


def test_d_accuracy_is_read_before_d_updates_on_the_batch():
    """With --d_steps 3 the losses are the third D update's, on images D has already stepped on;
    d_acc is the first update's, before any of them: equal to what a 1-update run logs from the
    same state and noise, and to the accuracy of that run's logits."""
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    one = make_trainer(options("--batch_size", "4"))
    three = make_trainer(options("--batch_size", "4", "--d_steps", "3"))
    logits = []
    forward = one.D.forward

    def spy(*args):
        out = forward(*args)
        logits.append(out.detach().view(-1))
        return out

    one.D.forward = spy
    torch.manual_seed(5)
    first = one.update(x)
    torch.manual_seed(5)
    third = three.update(x)
    real, fake = logits[0], logits[1]  # d_step's two D calls: real pairs, then generated ones
    by_hand = ((real > 0).float().mean() + (fake < 0).float().mean()) / 2
    assert float(first["d_acc"]) == pytest.approx(float(by_hand))
    assert float(third["d_acc"]) == float(first["d_acc"])
    assert float(third["errD"]) != float(first["errD"])
