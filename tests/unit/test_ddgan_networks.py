"""FIR resampling against its definition; generator and discriminator layouts and behaviour."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ddgan import upfirdn
from ddgan.discriminator import DiscriminatorLarge, DiscriminatorSmall, minibatch_stddev
from ddgan.ncsnpp import GeneratorConfig, NCSNpp


def upfirdn_naive(x, k, up, down, p0, p1):
    """The definition, one output pixel at a time: zero-insert, pad, true convolution, keep
    every down-th sample (numpy float64)."""
    n, c, h, w = x.shape
    kh, kw = k.shape
    u = np.zeros((n, c, h * up, w * up))
    u[:, :, ::up, ::up] = x
    big = np.zeros((n, c, h * up + max(p0, 0) + max(p1, 0), w * up + max(p0, 0) + max(p1, 0)))
    big[:, :, max(p0, 0):max(p0, 0) + h * up, max(p0, 0):max(p0, 0) + w * up] = u
    # negative pads crop
    big = big[:, :, max(-p0, 0):big.shape[2] - max(-p1, 0), max(-p0, 0):big.shape[3] - max(-p1, 0)]
    oh, ow = big.shape[2] - kh + 1, big.shape[3] - kw + 1
    out = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = big[:, :, i:i + kh, j:j + kw]
            out[:, :, i, j] = (patch * k[::-1, ::-1]).sum(axis=(2, 3))
    return out[:, :, ::down, ::down]


@pytest.mark.parametrize("up,down,p0,p1", [
    (1, 1, 0, 0), (2, 1, 2, 1), (1, 2, 1, 1), (2, 1, 1, 1), (1, 2, 2, 2), (3, 1, 1, 2),
    (2, 2, 1, 0), (1, 1, -1, 2), (2, 1, -1, 0)])
def test_upfirdn2d_equals_definition(up, down, p0, p1):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    k = rng.standard_normal((4, 4)).astype(np.float32)  # asymmetric: catches a missing flip
    xs = x
    ours = upfirdn.upfirdn2d(torch.from_numpy(xs), k, up=up, down=down, pad=(p0, p1)).double().numpy()
    ref = upfirdn_naive(xs.astype(np.float64), k.astype(np.float64), up, down, p0, p1)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_fir_up_down_shapes_and_constant_gain():
    x = torch.ones(1, 2, 8, 8)
    up = upfirdn.upsample_2d(x, (1, 3, 3, 1))
    down = upfirdn.downsample_2d(x, (1, 3, 3, 1))
    assert up.shape == (1, 2, 16, 16) and down.shape == (1, 2, 4, 4)
    # normalised kernels keep a constant image constant away from the zero-padded border
    assert torch.allclose(up[..., 2:-2, 2:-2], torch.ones(1, 2, 12, 12), atol=1e-6)
    assert torch.allclose(down[..., 1:-1, 1:-1], torch.ones(1, 2, 2, 2), atol=1e-6)


def test_fused_fir_convs_equal_resample_then_conv_inside():
    """The fused StyleGAN2 ops equal 'FIR up then 3x3 conv' / '3x3 conv then FIR down' except in
    the border pixels where the two orders see different zero padding."""
    torch.manual_seed(0)
    x, w = torch.randn(2, 3, 8, 8), torch.randn(5, 3, 3, 3)
    a = upfirdn.upsample_conv_2d(x, w)
    b = F.conv2d(upfirdn.upsample_2d(x), w, padding=1)
    assert a.shape == b.shape == (2, 5, 16, 16)
    assert torch.allclose(a[..., 3:-3, 3:-3], b[..., 3:-3, 3:-3], atol=1e-4)
    a = upfirdn.conv_downsample_2d(x, w)
    b = upfirdn.downsample_2d(F.conv2d(x, w, padding=1))
    assert a.shape == b.shape == (2, 5, 4, 4)
    assert torch.allclose(a[..., 1:-1, 1:-1], b[..., 1:-1, 1:-1], atol=1e-4)


def test_fir_double_backward():
    """R1 differentiates through the discriminator's FIR downsampling twice."""
    x = torch.randn(1, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda v: upfirdn.downsample_2d(v), (x,))
    assert torch.autograd.gradgradcheck(lambda v: upfirdn.upsample_2d(v), (x,))


def test_discriminator_sizes_match_reference():
    for cls, keys, params in [(DiscriminatorSmall, 38, 12_741_633),
                              (DiscriminatorLarge, 52, 27_737_217)]:
        with torch.device("meta"):
            d = cls(nc=6, ngf=64, t_emb_dim=256)
        sd = d.state_dict()
        assert len(sd) == keys
        assert sum(v.numel() for v in sd.values()) == params


def test_celebahq_generator_size_matches_reference():
    with torch.device("meta"):
        g = NCSNpp(GeneratorConfig(image_size=256, num_channels_dae=64, ch_mult=(1, 1, 2, 2, 4, 4)))
    sd = g.state_dict()
    assert len(sd) == 548
    assert sum(v.numel() for v in sd.values()) == 39_726_979


def test_minibatch_stddev_groups_and_refusal():
    x = torch.randn(8, 3, 2, 2)
    out = minibatch_stddev(x, 4)
    assert out.shape == (8, 4, 2, 2)
    # sample i is grouped with i + 2k (view(group, -1, ...)): compute group 0 by hand
    grp = x[[0, 2, 4, 6]]
    expected = torch.sqrt(grp.var(0, unbiased=False) + 1e-8).mean()
    assert torch.allclose(out[0, 3], expected.expand(2, 2))
    assert torch.allclose(out[4, 3], expected.expand(2, 2))
    assert minibatch_stddev(torch.randn(3, 2, 2, 2)).shape == (3, 3, 2, 2)  # group = batch
    with pytest.raises(ValueError, match="multiple of the group size 4"):
        minibatch_stddev(torch.randn(6, 2, 2, 2))


TINY = GeneratorConfig(image_size=16, num_channels=3, num_channels_dae=16, ch_mult=(1, 2),
                       num_res_blocks=1, attn_resolutions=(8,), nz=8, z_emb_dim=16, n_mlp=2)


def test_tiny_generator_forward_backward_and_fresh_init_scale():
    torch.manual_seed(0)
    g = NCSNpp(TINY)
    x = torch.randn(4, 3, 16, 16)
    out = g(x, torch.tensor([0, 1, 2, 3]), torch.randn(4, 8))
    assert out.shape == x.shape
    # the last conv starts at 1e-10 scale: fresh outputs are tiny
    assert out.abs().max() < 1e-3
    out.sum().backward()
    assert all(p.grad is not None for n, p in g.named_parameters() if p.requires_grad)


def test_generator_depends_on_z_and_t_with_random_weights():
    torch.manual_seed(0)
    g = NCSNpp(TINY)
    with torch.no_grad():
        for p in g.parameters():
            p.normal_(0, 0.2)
    x = torch.randn(2, 3, 16, 16)
    z = torch.randn(2, 8)
    a = g(x, torch.tensor([0, 0]), z)
    assert not torch.allclose(a, g(x, torch.tensor([1, 1]), z))
    assert not torch.allclose(a, g(x, torch.tensor([0, 0]), torch.randn(2, 8)))
    assert a.abs().max() <= 1.0  # tanh output


def test_discriminator_small_on_tiny_images():
    torch.manual_seed(0)
    d = DiscriminatorSmall(nc=6, ngf=4, t_emb_dim=16)
    out = d(torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3]), torch.randn(4, 3, 16, 16))
    assert out.shape == (4, 1)
