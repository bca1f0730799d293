"""Power-function EMA (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of
Diffusion Models", edm2): averages whose length is chosen after training.

A profile of exponent γ averages the training trajectory θ(τ), τ the images seen, with weights
proportional to τ^γ over [0, t]: its relative standard deviation (width over age) is
σ_rel = sqrt((γ+1) / ((γ+2)²(γ+3))). `--ema_std 0.05,0.1` tracks one average per σ_rel, each
updated after every optimizer step with

    β = (1 − Δt/t)^(γ+1),   average ← β·average + (1 − β)·θ,

t the images seen after the step and Δt the step's images (all ranks). Unrolled, the average at
T is exactly Σ_i θ_i (t_i^(γ+1) − t_{i−1}^(γ+1)) / T^(γ+1): the discrete power function, with no
bias towards the initial weights (the first step has β = 0).

Every `--ema_snapshot_interval` steps the tracked averages are written to
`RUN_DIR/phema_snapshots/snapshot%06d.pt`; `python -m trainkit.posthoc_ema` combines snapshots
into the average of any other σ_rel by least squares (`solve_coefficients`). The averages themselves
are part of every checkpoint (`phema_{σ_rel}_%06d.pt`, the model's layout, plus the images seen in
the state file), so a resumed run continues them bit for bit.
"""

import math

import blobfile as bf
import numpy as np
import torch

from . import dist, ema, fileio
from .errors import UserError

PREFIX = "phema_"  # checkpoint files phema_{σ_rel}_%06d.pt
SNAPSHOT_DIR = "phema_snapshots"
SNAPSHOT_FILE = "snapshot{:06d}.pt"


def parse_stds(text) -> list:
    """'0.05,0.1' -> [0.05, 0.1]; '' -> []. Each σ_rel must give a profile: 0 < σ_rel < sqrt(1/12)
    (γ = 0, the uniform average of all training, has the largest σ_rel, 0.2887)."""
    if isinstance(text, (int, float)):
        text = [text]
    if isinstance(text, str):
        text = [s for s in text.replace(" ", "").split(",") if s]
    out = []
    for s in text:
        try:
            v = float(s)
        except ValueError:
            raise UserError(f"--ema_std: {s!r} is not a number") from None
        if not 0.0 < v < math.sqrt(1 / 12):
            raise UserError(f"--ema_std {s}: σ_rel must lie in (0, {math.sqrt(1 / 12):.4f}) "
                            "(0.2887 is the plain average of all training)")
        out.append(v)
    return out


def std_name(std: float) -> str:
    return repr(float(std))


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """The largest real root of γ³ + 7γ² + (16 − σ_rel⁻²)γ + (12 − σ_rel⁻²) = 0."""
    s2 = float(sigma_rel) ** -2
    roots = np.roots([1.0, 7.0, 16.0 - s2, 12.0 - s2])
    return float(roots[np.abs(roots.imag) < 1e-9 * max(1.0, np.abs(roots).max())].real.max())


def gamma_to_sigma_rel(gamma: float) -> float:
    g = float(gamma)
    return math.sqrt((g + 1) / ((g + 2) ** 2 * (g + 3)))


def correlation(t_a, gamma_a, t_b, gamma_b):
    """The inner product of two power-function profiles (normalised to integrate to 1) ending at
    t_a and t_b: (γa+1)(γb+1)·(ta/tb)^e / ((γa+γb+1)·max(ta, tb)), e = γb if ta < tb else −γa.
    Broadcasts over numpy arrays."""
    t_a, gamma_a, t_b, gamma_b = (np.asarray(v, dtype=np.float64) for v in (t_a, gamma_a, t_b, gamma_b))
    exponent = np.where(t_a < t_b, gamma_b, -gamma_a)
    return ((gamma_a + 1) * (gamma_b + 1) * (t_a / t_b) ** exponent
            / ((gamma_a + gamma_b + 1) * np.maximum(t_a, t_b)))


def solve_coefficients(in_t, in_sigma, out_t, out_sigma) -> np.ndarray:
    """Weights X (one row per snapshot, one column per target) with Σ_i X_ij·snapshot_i the best
    least-squares approximation of the profile (out_t_j, out_sigma_j): A X = B with A the snapshots'
    correlations and B theirs with the targets; each column normalised to sum 1."""
    in_t = np.asarray(in_t, dtype=np.float64).reshape(-1, 1)
    in_g = np.array([sigma_rel_to_gamma(s) for s in np.ravel(in_sigma)]).reshape(-1, 1)
    out_t = np.asarray(out_t, dtype=np.float64).reshape(1, -1)
    out_g = np.array([sigma_rel_to_gamma(s) for s in np.ravel(out_sigma)]).reshape(1, -1)
    a = correlation(in_t, in_g, in_t.T, in_g.T)
    b = correlation(in_t, in_g, out_t, out_g)
    # lstsq, not solve: two snapshots of one profile at nearby times make A nearly singular
    x = np.linalg.lstsq(a, b, rcond=None)[0]
    return x / x.sum(axis=0, keepdims=True)


class PowerEMA:
    """The tracked power-function averages of one model's parameters, one per σ_rel."""

    def __init__(self, model: torch.nn.Module, stds, images_per_step: int):
        self.stds = parse_stds(stds)
        self.gammas = [sigma_rel_to_gamma(s) for s in self.stds]
        self.images_per_step = int(images_per_step)
        self.state_key = "phema"  # its entry in the trainer state
        self.nimg = 0  # images seen by the steps averaged so far
        self.names = [n for n, _ in model.named_parameters()]
        self.shadows = [[p.detach().clone() for p in model.parameters()] for _ in self.stds]

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        params = [p.detach() for p in model.parameters()]
        dt = self.images_per_step
        t = self.nimg + dt
        for gamma, shadow in zip(self.gammas, self.shadows):
            beta = (1.0 - dt / t) ** (gamma + 1)  # 0 on the first step: the average starts at θ_1
            torch._foreach_lerp_(shadow, params, 1.0 - beta)
        self.nimg = t

    def prefix(self, std: float) -> str:
        return f"{PREFIX}{std_name(std)}_"

    def files(self, model: torch.nn.Module) -> dict:
        """{prefix: the model's state_dict with this profile's averages} for a checkpoint."""
        out = {}
        for std, shadow in zip(self.stds, self.shadows):
            out[self.prefix(std)] = ema.averaged_state_dict(model, self.names, shadow)
        return out

    def state(self) -> dict:
        return {"nimg": int(self.nimg), "sigma_rel": list(self.stds)}

    @torch.no_grad()
    def load(self, ck, model: torch.nn.Module, log=None) -> None:
        """Restore from a trainkit Checkpoint: each profile's file and the images seen. A profile
        the checkpoint lacks restarts from the current weights (trainkit.ema's missing-file
        policy, one logged line)."""
        saved = (ck.state or {}).get(self.state_key) or {}
        self.nimg = int(saved.get("nimg", 0))
        for std, shadow in zip(self.stds, self.shadows):
            ema.load_average(shadow, self.names, ck, self.prefix(std), model, log, f"the σ_rel {std} average")
        if self.stds and "nimg" not in saved:
            (log or ema.log_default)(f"step {ck.step} records no images seen for the power-function EMA: "
                                     "counting from 0")

    def write_snapshot(self, run_dir: str, step: int, model: torch.nn.Module) -> str:
        """Every profile's average now, in one file written atomically (call on rank 0)."""
        record = {"step": int(step), "nimg": int(self.nimg), "sigma_rel": list(self.stds),
                  "gamma": list(self.gammas), "parameters": list(self.names),
                  "averages": [self.files(model)[self.prefix(s)] for s in self.stds]}
        path = bf.join(run_dir, SNAPSHOT_DIR, SNAPSHOT_FILE.format(int(step)))
        with fileio.atomic_path(path) as tmp:
            torch.save(record, tmp)
        return path


def snapshot_due(power, interval: int, run_dir: str, step: int, model, checkpoint: bool = False) -> None:
    """A Task's after_step: rank 0 writes the snapshot of `step` when it is a multiple of
    `interval`. With `checkpoint` (a Task's artefacts, at every checkpoint: among them the last
    step of the run, or where a stop or deadline ended it) also when it is not, as edm2 saves one
    when training is done: otherwise the newest snapshot, the step the post-hoc average is
    reconstructed at, would lag the run's end by up to `interval` steps (the main job's DDGAN:
    step 550 of 597), and a run still improving samples weights that many steps stale."""
    due = bool(interval) and (step % interval == 0) != checkpoint
    if power is not None and due and dist.is_main():
        with dist.rank_zero_only("phema snapshot"):
            power.write_snapshot(run_dir, step, model)


def add_args(parser):
    """The power-function EMA flags, the same for every family."""
    parser.add_argument("--ema_std", default="", type=_stds_flag,
                        help="comma list of σ_rel of power-function EMA profiles to track (Karras et al. 2024; "
                             "edm2 tracks 0.05,0.1); '' = none. Their averages are checkpointed as "
                             "phema_{σ_rel}_*.pt; any σ_rel is reconstructed after training by "
                             "python -m trainkit.posthoc_ema (docs/ema.md)")
    parser.add_argument("--ema_snapshot_interval", type=int, default=0,
                        help="with --ema_std: steps between snapshots of the profiles in "
                             f"RUN_DIR/{SNAPSHOT_DIR}/, the input of the post-hoc reconstruction (0: none; "
                             "edm2 snapshots every 8 Mimg of ~2 Gimg, about 250 snapshots a run)")
    return parser


def _stds_flag(text):
    import argparse

    try:
        parse_stds(text)
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--ema_std").lstrip(": ")) from None
    return text


def check_args(stds, snapshot_interval) -> None:
    if snapshot_interval < 0:
        raise UserError(f"--ema_snapshot_interval {snapshot_interval}: must be 0 (none) or a number of steps")
    if snapshot_interval and not parse_stds(stds):
        raise UserError(f"--ema_snapshot_interval {snapshot_interval}: there is nothing to snapshot without "
                        "--ema_std")


def with_power_ema(task, model, stds, snapshot_interval: int, images_per_step: int, log=None):
    """`task` with power-function averages of `model` added, for a family whose Task keeps only
    fixed-rate EMAs (improved_diffusion): `task` itself when `stds` is empty."""
    if not parse_stds(stds):
        return task
    return _WithPowerEMA(task, model, PowerEMA(model, stds, images_per_step), snapshot_interval, log)


class _WithPowerEMA:
    """Delegates to the wrapped loop.Task and adds the profiles: updated after every step (as edm2
    updates its EMA every step), checkpointed beside the task's files, snapshotted after_step."""

    def __init__(self, task, model, power, snapshot_interval, log):
        self.task, self.model, self.power = task, model, power
        self.snapshot_interval, self.log = int(snapshot_interval or 0), log

    def __getattr__(self, name):  # everything else (precision, ema, log_extras...) is the task's
        return getattr(self.task, name)

    def step(self, batch, step, epoch):
        stats = self.task.step(batch, step, epoch)
        self.power.update(self.model)
        return stats

    def state_dicts(self):
        return {**self.task.state_dicts(), **ema.save_states(self.model, self.power)}

    def trainer_state(self):
        return {**self.task.trainer_state(), **ema.averages_state(self.power)}

    def load_state_dicts(self, ck):
        self.task.load_state_dicts(ck)
        ema.load_states(ck, self.model, self.power, log=self.log)

    def sample_weights(self, step):
        chosen = self.task.sample_weights(step)
        return chosen if chosen != "model" else self.power.prefix(self.power.stds[0])

    def after_step(self, run_dir, step):
        getattr(self.task, "after_step", lambda *a: None)(run_dir, step)
        snapshot_due(self.power, self.snapshot_interval, run_dir, step, self.model)

    def artefacts(self, run_dir, step):
        getattr(self.task, "artefacts", lambda *a: None)(run_dir, step)
        snapshot_due(self.power, self.snapshot_interval, run_dir, step, self.model, checkpoint=True)
