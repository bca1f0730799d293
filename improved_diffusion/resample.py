"""Schedule samplers: which timesteps a training batch uses, with importance weights.

"uniform" draws t uniformly. "loss-second-moment" (Nichol & Dhariwal, sec. 3.3) draws t
with probability proportional to sqrt(E[L_t^2]) over the last 10 losses of each t, mixed
with 0.001 uniform, once every t has its 10 losses; the weights 1/(T p_t) keep the
objective unbiased. Draws come from numpy's global generator, whose state the trainer
checkpoints, so resumed runs draw the same timesteps.
"""

from abc import ABC, abstractmethod

import numpy as np
import torch
import torch.distributed as tdist


def create_named_schedule_sampler(name, diffusion):
    if name == "uniform":
        return UniformSampler(diffusion)
    if name == "loss-second-moment":
        return LossSecondMomentResampler(diffusion)
    raise NotImplementedError(f"unknown schedule sampler: {name}")


class ScheduleSampler(ABC):
    """A distribution over timesteps used to importance-sample the objective."""

    @abstractmethod
    def weights(self):
        """Unnormalised positive weights, one per timestep."""

    def sample(self, batch_size, device):
        """(timesteps, weights) tensors of length batch_size."""
        w = self.weights()
        p = w / np.sum(w)
        indices_np = np.random.choice(len(p), size=(batch_size,), p=p)
        indices = _upload(torch.from_numpy(indices_np).long(), device)
        weights = _upload(torch.from_numpy(1 / (len(p) * p[indices_np])).float(), device)
        return indices, weights

    # Stateless samplers have nothing to save.
    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def _upload(host, device):
    """A host tensor on `device` without making the host wait: the draws come from numpy's
    generator (checkpointed, so resumed runs draw the same), and a copy from pageable memory to
    a GPU blocks until the device is idle, every step. From pinned memory the copy is queued
    (the pinned block is not reused before the copy ends: torch's host allocator records it)."""
    device = torch.device(device)
    if device.type == "cpu":
        return host
    if device.type == "cuda":
        return host.pin_memory().to(device, non_blocking=True)
    return host.to(device)


class UniformSampler(ScheduleSampler):
    def __init__(self, diffusion):
        self.diffusion = diffusion
        self._weights = np.ones([diffusion.num_timesteps])

    def weights(self):
        return self._weights


class LossAwareSampler(ScheduleSampler):
    def update_with_local_losses(self, local_ts, local_losses):
        """Gather every rank's (t, loss) pairs in rank order and update with all of them,
        so every rank keeps the same weights. COLLECTIVE when a process group is up."""
        ts = [int(x) for x in local_ts.detach().cpu().tolist()]
        losses = [float(x) for x in local_losses.detach().float().cpu().tolist()]
        if tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1:
            gathered = [None] * tdist.get_world_size()
            tdist.all_gather_object(gathered, (ts, losses))
            ts = [t for g in gathered for t in g[0]]
            losses = [v for g in gathered for v in g[1]]
        self.update_with_all_losses(ts, losses)

    @abstractmethod
    def update_with_all_losses(self, ts, losses):
        """Deterministic update from the losses of all ranks."""


class LossSecondMomentResampler(LossAwareSampler):
    def __init__(self, diffusion, history_per_term=10, uniform_prob=0.001):
        self.diffusion = diffusion
        self.history_per_term = history_per_term
        self.uniform_prob = uniform_prob
        self._loss_history = np.zeros([diffusion.num_timesteps, history_per_term], dtype=np.float64)
        self._loss_counts = np.zeros([diffusion.num_timesteps], dtype=np.int64)

    def weights(self):
        if not self._warmed_up():
            return np.ones([self.diffusion.num_timesteps], dtype=np.float64)
        weights = np.sqrt(np.mean(self._loss_history**2, axis=-1))
        weights /= np.sum(weights)
        weights *= 1 - self.uniform_prob
        weights += self.uniform_prob / len(weights)
        return weights

    def update_with_all_losses(self, ts, losses):
        for t, loss in zip(ts, losses):
            if self._loss_counts[t] == self.history_per_term:
                # Full: drop the oldest loss.
                self._loss_history[t, :-1] = self._loss_history[t, 1:]
                self._loss_history[t, -1] = loss
            else:
                self._loss_history[t, self._loss_counts[t]] = loss
                self._loss_counts[t] += 1

    def _warmed_up(self):
        return bool((self._loss_counts == self.history_per_term).all())

    def state_dict(self):
        return {"loss_history": torch.from_numpy(self._loss_history.copy()),
                "loss_counts": torch.from_numpy(self._loss_counts.copy())}

    def load_state_dict(self, state):
        history = state["loss_history"].numpy()
        if history.shape != self._loss_history.shape:
            raise ValueError(f"schedule sampler state has shape {history.shape}, expected {self._loss_history.shape}")
        self._loss_history = history.astype(np.float64).copy()
        self._loss_counts = state["loss_counts"].numpy().astype(np.int64).copy()
