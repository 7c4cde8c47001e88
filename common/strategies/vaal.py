"""VAAL: Sinha, Ebrahimi & Darrell, "Variational Adversarial Active Learning" (ICCV 2019).

A VAE learns a latent space of labelled and unlabelled images together; a discriminator
learns to tell labelled latents (target 1) from unlabelled ones (target 0) while the VAE also
tries to make unlabelled latents look labelled. The images the discriminator scores least
"labelled" are acquired. The task model is trained by the same loop as every other method
(warm start, same schedule), so the comparison is like-for-like.

Hyper-parameters (VAAL paper defaults where they carry over; documented in docs/usage.md):
latent 32, beta 1 (KL weight), adversarial weight 1, Adam lr 5e-4 for both networks, batch 64
labelled + 64 unlabelled. A fresh, seeded VAE and discriminator are trained for
--vaal-steps steps (default 300) at every acquisition, so the cost is fixed whatever the pool.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.errors import UserError
from common.images import is_lazy
from common.seeding import torch_global_seed
from common.strategies.base import STRATEGIES, AcquisitionState, Strategy
from common.train import batches, model_input


@dataclass(frozen=True)
class VaalSettings:
    latent: int = 32
    beta: float = 1.0
    adversarial_weight: float = 1.0
    lr: float = 5e-4
    batch_size: int = 64


class ConvVAE(nn.Module):
    """Two stride-2 conv layers down, two transposed convs up; inputs of side divisible by 4."""

    def __init__(self, channels: int, side: int, latent: int) -> None:
        super().__init__()
        if side % 4:
            raise ValueError(f"VAAL's VAE needs an image side divisible by 4, got {side}")
        self.side = side // 4
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, 32, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
        )
        flat = 64 * self.side * self.side
        self.mean, self.log_variance = nn.Linear(flat, latent), nn.Linear(flat, latent)
        self.expand = nn.Linear(latent, flat)
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(32, channels, 4, stride=2, padding=1),
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.encoder(x)
        return self.mean(hidden), self.log_variance(hidden)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, log_variance = self.encode(x)
        latent = mean + torch.randn_like(mean) * (0.5 * log_variance).exp()
        recon = self.decoder(self.expand(latent).view(len(x), 64, self.side, self.side))
        return recon, latent, mean, log_variance


def discriminator(latent: int) -> nn.Module:
    return nn.Sequential(nn.Linear(latent, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 1))


def vae_loss(vae: ConvVAE, x: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Reconstruction MSE + beta * KL, and the sampled latent."""
    recon, latent, mean, log_variance = vae(x)
    kl = -0.5 * torch.mean(torch.sum(1 + log_variance - mean.pow(2) - log_variance.exp(), dim=1))
    return F.mse_loss(recon, x) + beta * kl, latent


def train_vaal(
    labelled: torch.Tensor, unlabelled: torch.Tensor, settings: VaalSettings, steps: int, generator: torch.Generator,
    device: torch.device = torch.device("cpu"),
) -> tuple[ConvVAE, nn.Module]:
    """Train a VAE and a discriminator on `device` from normalised labelled/unlabelled image tensors (kept
    where they are, e.g. on the CPU; each batch is drawn there and moved)."""
    vae = ConvVAE(labelled.shape[1], labelled.shape[2], settings.latent).to(device)
    critic = discriminator(settings.latent).to(device)
    vae_optimiser = torch.optim.Adam(vae.parameters(), lr=settings.lr)
    critic_optimiser = torch.optim.Adam(critic.parameters(), lr=settings.lr)
    for _ in range(steps):
        x_l = labelled[torch.randint(len(labelled), (settings.batch_size,), generator=generator)].to(device)
        x_u = unlabelled[torch.randint(len(unlabelled), (settings.batch_size,), generator=generator)].to(device)
        loss_l, latent_l = vae_loss(vae, x_l, settings.beta)
        loss_u, latent_u = vae_loss(vae, x_u, settings.beta)
        fool = F.binary_cross_entropy_with_logits(
            critic(torch.cat([latent_l, latent_u])), torch.ones(2 * settings.batch_size, 1, device=device)
        )
        vae_optimiser.zero_grad(set_to_none=True)
        (loss_l + loss_u + settings.adversarial_weight * fool).backward()
        vae_optimiser.step()
        with torch.no_grad():
            mean_l, _ = vae.encode(x_l)
            mean_u, _ = vae.encode(x_u)
        targets = torch.cat([torch.ones(settings.batch_size, 1, device=device),
                             torch.zeros(settings.batch_size, 1, device=device)])
        critic_loss = F.binary_cross_entropy_with_logits(critic(torch.cat([mean_l, mean_u])), targets)
        critic_optimiser.zero_grad(set_to_none=True)
        critic_loss.backward()
        critic_optimiser.step()
    return vae, critic


class VaalStrategy(Strategy):
    """Acquire the unlabelled images the discriminator finds least like the labelled set."""

    run_settings = ("vaal_steps",)

    def __init__(self, settings: VaalSettings = VaalSettings()) -> None:
        self.settings = settings

    def select(self, state: AcquisitionState) -> np.ndarray:
        if is_lazy(state.pool.images):
            raise UserError("vaal trains its VAE on the whole pool held in memory; it does not support "
                            "datasets streamed from files (e.g. imagenet)")
        device = torch.device("cpu") if state.options.device.type != "cuda" else state.options.device
        labelled_positions = np.setdiff1d(np.arange(len(state.pool)), state.unlabelled)
        pool_inputs = model_input(state.to_input, state.pool.images, torch.device("cpu")).contiguous()
        unlabelled = pool_inputs[torch.from_numpy(state.unlabelled)]
        # at b=0 nothing is labelled yet: the VAE then learns the pool alone (labelled = a seeded sample)
        anchor = labelled_positions if len(labelled_positions) else state.rng.choice(
            state.unlabelled, size=min(self.settings.batch_size, len(state.unlabelled)), replace=False)
        labelled = pool_inputs[torch.from_numpy(anchor)]
        generator = torch.Generator().manual_seed(state.seed)
        with torch_global_seed(state.seed):  # VAE/discriminator init and reparameterisation noise
            vae, critic = train_vaal(labelled, unlabelled, self.settings, state.options.vaal_steps, generator, device)
            vae.eval()
            critic.eval()
            with torch.no_grad():
                scores = torch.cat([
                    torch.sigmoid(critic(vae.encode(unlabelled[part].to(device))[0])).squeeze(1).cpu()
                    for part in batches(len(unlabelled), state.options.batch_size)
                ]).double().numpy()
        lowest = np.lexsort((state.rng.random(len(scores)), scores))[: state.budget]
        return state.unlabelled[lowest]


STRATEGIES.register("vaal", VaalStrategy())
