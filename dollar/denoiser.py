"""A diffusers video transformer seen through (x0_hat, eps_hat): the one interface every
sampler and loss uses, whatever the network predicts and whichever family it belongs to."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from dollar.schedule import (
    PREDICTION_TYPES,
    NoiseSchedule,
    as_schedule,
    classifier_free_guidance,
    model_input,
    prediction_to_x0_eps,
    x0_eps_to_prediction,
)
from dollar.teachers import FAMILIES, TeacherFamily


class Denoiser(torch.nn.Module):
    """Wraps a teacher-family transformer: ``denoiser(x_t, t, text) -> (x0_hat, eps_hat)``.

    ``x_t`` is ``[B, C, F, H, W]`` on ``schedule`` (a :class:`NoiseSchedule`, or an
    ``alphas_cumprod`` tensor for a DDPM one) at network timesteps ``t`` [B]; ``family`` says
    how the network is called (see :mod:`dollar.teachers`).
    """

    def __init__(
        self,
        transformer: torch.nn.Module,
        schedule: NoiseSchedule | torch.Tensor,
        prediction_type: str = "conjugate_velocity",
        family: TeacherFamily | str = "dollar",
        vae_scale: tuple[int, int] = (4, 8),
    ):
        super().__init__()
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"unknown prediction_type {prediction_type!r}; use one of {PREDICTION_TYPES}")
        self.transformer = transformer
        self.schedule = as_schedule(schedule)
        self.prediction_type = prediction_type
        self.family = FAMILIES[family] if isinstance(family, str) else family
        self.vae_scale = vae_scale

    def _timesteps(self, t, x: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device)
        return t.expand(x.shape[0]) if t.ndim == 0 else t

    def raw(self, x_t: torch.Tensor, t: torch.Tensor, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        """The network's own output (its prediction type) at the point (x_t, t), in float32."""
        t = self._timesteps(t, x_t)
        inp, timestep = model_input(x_t, t, self.schedule, self.prediction_type)
        dtype = (
            self.transformer.dtype
            if isinstance(getattr(type(self.transformer), "dtype", None), property)
            else next(self.transformer.parameters()).dtype
        )
        out = self.family.call_transformer(self.transformer, inp.to(dtype), timestep, encoder_hidden_states.to(dtype), self.vae_scale)
        return out.float()

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, encoder_hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = self._timesteps(t, x_t)
        alpha, sigma = self.schedule.alpha_sigma(t, x_t.device)
        return prediction_to_x0_eps(self.raw(x_t, t, encoder_hidden_states), x_t.float(), alpha, sigma, self.prediction_type)

    def target(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What an exact network of this prediction type outputs at ``add_noise(x0, eps, t)``."""
        alpha, sigma = self.schedule.alpha_sigma(self._timesteps(t, x0), x0.device)
        return x0_eps_to_prediction(x0.float(), eps.float(), alpha, sigma, self.prediction_type)

    def denoising_loss(
        self,
        x0: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        t: torch.Tensor | None = None,
        eps: torch.Tensor | None = None,
        generator=None,
    ) -> torch.Tensor:
        """The network's own training loss, MSE to :meth:`target` at ``x_t = add_noise(x0, eps, t)``
        (t drawn from the schedule when not given): the teacher's objective, in its own terms."""
        if t is None:
            t = self.schedule.sample_timesteps(x0.shape[0], generator, x0.device)
        if eps is None:
            eps = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
        x_t = self.schedule.add_noise(x0, eps, t)
        return F.mse_loss(self.raw(x_t, t, encoder_hidden_states), self.target(x0, eps, t))

    def guided(
        self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor | None, w: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Classifier-free guidance with METHOD.md's w (effective scale 1 + w); w = 0 is conditional."""
        if w == 0 or uncond is None:
            return self(x_t, t, cond)
        t = self._timesteps(t, x_t)
        x0, eps = self(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([cond, uncond]))
        (x0_c, x0_u), (eps_c, eps_u) = x0.chunk(2), eps.chunk(2)
        return classifier_free_guidance(x0_c, x0_u, w), classifier_free_guidance(eps_c, eps_u, w)

    def conditioned(self, cond: torch.Tensor, uncond: torch.Tensor | None = None, w: float = 0.0):
        """``denoise(x, t) -> (x0_hat, eps_hat)`` with the text (and guidance) fixed: what the
        samplers take; ``t`` may be a number or a tensor [B]."""
        return functools.partial(self.guided, cond=cond, uncond=uncond, w=w)


def x0_only(denoise):
    """``(x, t) -> x0_hat`` from a ``denoise(x, t) -> (x0_hat, eps_hat)``: what the losses take."""
    return lambda x, t: denoise(x, t)[0]
