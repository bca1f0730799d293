# The default comparison (python -m evaluations.compare, launch/quickstart.sh): every family on
# the embedded digits at 16 px, each trained and sampled as a 2-process job.
DATA_DIR=data/digits16                                   # exported if missing:
DATA_PREP="python datasets/digits.py --out {data_dir} --size 16"
NPROC=2
MINUTES=17             # whole job, about; training gets TRAIN_FRACTION of it, split by SHARE
TRAIN_FRACTION=0.58    # 0.65 before the cDDPM run and the post-hoc sweeps, whose ~25 extra stages cost ~3 min
NUM_SAMPLES=500        # per family and sampler, same seeds for all
SAMPLE_BATCH=125       # per process
PROBE_POINTS=4         # FD-digits of PROBE_SAMPLES fixed samples at 4 evenly spaced points of each
PROBE_SAMPLES=200      # training's share, the last at its end (the report's "over training" figure)

# Today's recipes , chosen by measurement at fixed step counts (docs/evaluations.md,
# "Today's recipes in the main job", has the tables):
# - dcgan, cdcgan: generator EMA (--ema_kimg 5, StyleGAN2-ADA's half-life, sampled by default) and
#   R1 (--r1_gamma 0.1, lazy every 4 steps). At 3,000 steps dcgan's FD-digits went 82 (none, 1,500
#   steps) / 79 (EMA) -> 12.2 (EMA + R1) / 11.2 (half-life 5 kimg); DiffAugment on top of R1 made it
#   worse (30.6) and twice as slow, so the GANs train without it.
# - ddgan: the half-life EMA (--ema_kimg 5, capped by the ramp-up at 5% of the images seen); its
#   R1 as before. DiffAugment made it worse in the few hundred steps it gets here (at 500 steps the
#   post-hoc averages scored FD-digits 382-525 with it, 273-284 without).
# - improved_diffusion: unchanged recipe; cddpm: classifier-free guidance (--class_dropout_prob 0.1,
#   cddpm_digits.sh) with min-SNR-5 weighting (--snr_gamma 5): at 1,200 steps and w = 2 (SDE-DPM++
#   2M, 20 steps) class accuracy 0.994, precision 0.894, class recall mean 0.703 (without it: 0.978 /
#   0.738 / 0.804 with DPM++ 2M at 10 steps; 0.997 / 0.844 / 0.549 with the SDE at w = 3).
# - post-hoc EMA (--ema_std 0.05,0.1 and snapshots; POSTHOC_EMA below): every family but cddpm
#   (its two guided rows cost 2 network evaluations each; the sweep would add 5 stages).
E="--ema_std 0.05,0.1"
GAN="--ema_kimg 5 --ema_rampup 0.05 --r1_gamma 0.1 --lazy_reg 4 $E --ema_snapshot_interval 250"
SDE="--timestep_respacing '' --sampler dpmpp_2m_sde --steps 20 --time_schedule logsnr"

# One run a line: NAME | FLAG_FILE | PACKAGE | SHARE | extra train flags | samplers
# samplers: "label: extra sample flags" separated by ";" (one empty sampler when blank).
# ddim-10 is DDIM's deterministic sampler at 10 steps from t = T-1 to 0 (samplers.sample_loop),
# not openai's "ddim10" respacing, which starts from pure noise at t = 90 of 100, where the
# cosine schedule's alpha-bar is 0.02 (2e-7 at t = 99): a different sampler.
# improved_diffusion's rows dropped for the budget : full (ancestral, 100 steps),
# dpmpp_2m-20, dpmpp_2m_sde-10 and heun-19 (on 2026-12-06: 8.96 at best, dpmpp_2m_sde-20, kept).
# Shares 1 : 1 : 2 : 2.5 : 2.5. With 1 : 1 : 3 : 1.5 : 2.5 (main job of 2026-12-06, run beside the test
# suite) improved diffusion had 102 s and scored FD-digits 89.6 (its grid: blurred, half-formed
# digits) while DDGAN's extra time still left it at 167: DDGAN gives time back to improved diffusion.
# cddpm's rows: w = 1 (the conditional model, no guidance) and w = 2 (guided; a guided network
# evaluation is one forward of twice the rows).
RUNS="
dcgan              | flags/gans/dcgan_digits.sh                 | gans               | 1   | --max_steps 100000 $GAN |
cdcgan             | flags/gans/cdcgan_digits.sh                | gans               | 1   | --max_steps 100000 $GAN |
ddgan              | flags/ddgan/digits16.sh                    | ddgan              | 2   | --num_epoch 100000 --ema_kimg 5 $E --ema_snapshot_interval 50 |
improved_diffusion | flags/improved_diffusion/digits_tiny.sh    | improved_diffusion | 2.5 | --max_steps 100000 $E --ema_snapshot_interval 100 | ddim-10: --timestep_respacing '' --sampler ddim --steps 10 ; dpmpp_2m-10: --timestep_respacing '' --sampler dpmpp_2m --steps 10 --time_schedule logsnr ; dpmpp_2m_sde-20: $SDE
cddpm              | flags/improved_diffusion/cddpm_digits.sh   | improved_diffusion | 2.5 | --max_steps 100000 --snr_gamma 5 | w1: $SDE --guidance_scale 1 ; w2: $SDE --guidance_scale 2
"
# Post-hoc EMA sweeps: RUN | σ_rel reconstructed | the sampler that judges them (POSTHOC_SAMPLES =
# PROBE_SAMPLES images each); the lowest FD's σ_rel is sampled in full (row phema<σ_rel>-SAMPLER).
# The GANs' short trainings liked short averages (dcgan at 3,000 steps: σ_rel 0.02 / 0.05 / 0.1 /
# 0.2 gave FD-digits 15.6 / 15.9 / 16.6 / 19.5 on 200 samples; cdcgan 13.9 / 13.7 / 14.6 at 0.02 /
# 0.05 / 0.1), DDGAN's longer ones (500 steps: 274 / 273 / 284 / 266 at 0.02 / 0.05 / 0.1 / 0.2).
POSTHOC_EMA="
dcgan              | 0.02,0.05,0.1
cdcgan             | 0.02,0.05,0.1
ddgan              | 0.05,0.1,0.2
improved_diffusion | 0.05,0.1,0.2 | dpmpp_2m-10
"
# Control stages: each run's flag file asks for them (INTERPOLATE_FLAGS: <package>.interpolate,
# EDIT_FLAGS: <package>.edit); these flags come after the flag file's ({data}: the folder the
# runs trained on): the edits start from training images.
EDIT_FLAGS="--images {data}"
