"""A diffusers video transformer seen through (x0_hat, eps_hat): the one interface every
sampler and loss uses, whatever the network predicts."""

from __future__ import annotations

import torch

from dollar.schedule import PREDICTION_TYPES, classifier_free_guidance, model_input, prediction_to_x0_eps


class Denoiser(torch.nn.Module):
    """Wraps ``transformer(hidden_states, timestep, encoder_hidden_states)`` (diffusers signature)."""

    def __init__(self, transformer: torch.nn.Module, alphas_cumprod: torch.Tensor, prediction_type: str = "conjugate_velocity"):
        super().__init__()
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"unknown prediction_type {prediction_type!r}; use one of {PREDICTION_TYPES}")
        self.transformer = transformer
        self.prediction_type = prediction_type
        self.register_buffer("alphas_cumprod", alphas_cumprod.float(), persistent=False)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, encoder_hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inp, timestep = model_input(x_t, t, self.alphas_cumprod, self.prediction_type)
        dtype = next(self.transformer.parameters()).dtype
        out = self.transformer(inp.to(dtype), timestep, encoder_hidden_states.to(dtype), return_dict=False)[0]
        return prediction_to_x0_eps(out.float(), x_t.float(), self.alphas_cumprod[t], self.prediction_type)

    def guided(
        self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor | None, w: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Classifier-free guidance with METHOD.md's w (effective scale 1 + w); w = 0 is conditional."""
        if w == 0 or uncond is None:
            return self(x_t, t, cond)
        x0, eps = self(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([cond, uncond]))
        (x0_c, x0_u), (eps_c, eps_u) = x0.chunk(2), eps.chunk(2)
        return classifier_free_guidance(x0_c, x0_u, w), classifier_free_guidance(eps_c, eps_u, w)
