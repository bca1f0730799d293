# The default comparison (python -m evaluations.compare, launch/quickstart.sh): every family on
# the embedded digits at 16 px, each trained and sampled as a 2-process job.
DATA_DIR=data/digits16                                   # exported if missing:
DATA_PREP="python datasets/digits.py --out {data_dir} --size 16"
NPROC=2
MINUTES=17             # whole job, about; training gets TRAIN_FRACTION of it, split by SHARE
TRAIN_FRACTION=0.65
NUM_SAMPLES=500        # per family and sampler, same seeds for all
SAMPLE_BATCH=125       # per process
PROBE_POINTS=4         # FD-digits of PROBE_SAMPLES fixed samples at 4 evenly spaced points of each
PROBE_SAMPLES=200      # training's share, the last at its end (the report's "over training" figure)

# One run a line: NAME | FLAG_FILE | PACKAGE | SHARE | extra train flags | samplers
# samplers: "label: extra sample flags" separated by ";" (one empty sampler when blank).
# ddim-10 is DDIM's deterministic sampler at 10 steps from t = T-1 to 0 (samplers.sample_loop),
# not openai's "ddim10" respacing, which starts from pure noise at t = 90 of 100, where the
# cosine schedule's alpha-bar is 0.02 (2e-7 at t = 99): a different sampler.
RUNS="
dcgan              | flags/gans/dcgan_digits.sh                 | gans               | 1   | --max_steps 100000 |
cdcgan             | flags/gans/cdcgan_digits.sh                | gans               | 1   | --max_steps 100000 |
ddgan              | flags/ddgan/digits16.sh                    | ddgan              | 2.5 | --num_epoch 100000 |
improved_diffusion | flags/improved_diffusion/digits_tiny.sh    | improved_diffusion | 3   | --max_steps 100000 | full: --timestep_respacing 100 ; ddim-10: --timestep_respacing '' --sampler ddim --steps 10 ; dpmpp_2m-10: --timestep_respacing '' --sampler dpmpp_2m --steps 10 --time_schedule logsnr ; dpmpp_2m-20: --timestep_respacing '' --sampler dpmpp_2m --steps 20 --time_schedule logsnr ; dpmpp_2m_sde-10: --timestep_respacing '' --sampler dpmpp_2m_sde --steps 10 --time_schedule logsnr ; dpmpp_2m_sde-20: --timestep_respacing '' --sampler dpmpp_2m_sde --steps 20 --time_schedule logsnr ; heun-19: --timestep_respacing '' --sampler heun --steps 10 --time_schedule karras
"
