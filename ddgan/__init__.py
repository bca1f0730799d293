"""Denoising Diffusion GANs (Xiao, Kreis, Vahdat 2022): VP posterior diffusion with a GAN
per step, NCSN++ generator, time-conditioned discriminators."""
