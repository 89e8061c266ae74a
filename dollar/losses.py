"""The method's losses as pure functions of networks and tensors (METHOD.md sections 1 and 3).

No optimizer lives here; the trainers order the steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dollar.schedule import add_noise, conjugate_velocity_target


def conjugate_velocity_loss(
    transformer: torch.nn.Module,
    x0: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    t: torch.Tensor | None = None,
    eps: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """L_CV = E || v(x_t, t, c) - (x0 - eps) ||^2, t uniform on the 1000 DDPM steps.

    Trains the teacher on data latents, and the fake score on student samples.
    """
    b = x0.shape[0]
    if t is None:
        t = torch.randint(0, alphas_cumprod.shape[0], (b,), generator=generator).to(x0.device)
    if eps is None:
        eps = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
    x_t = add_noise(x0, eps, t, alphas_cumprod)
    dtype = next(transformer.parameters()).dtype
    v = transformer(x_t.to(dtype), t, encoder_hidden_states.to(dtype), return_dict=False)[0]
    return F.mse_loss(v.float(), conjugate_velocity_target(x0, eps).float())
