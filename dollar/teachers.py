"""Teacher families: the one place that knows how each stock text-to-video checkpoint is driven.

A family says, for the checkpoints of one diffusers pipeline class, how the transformer is called
(argument names, tensor layout, rotary embeddings, token packing, attention masks), how prompts
become text states (length, padding), the default resolution and frame count with their
divisibility rules, how the noise schedule and prediction type are read from the stock scheduler,
and how latents are decoded. Everything else (losses, samplers, the trainer) sees only a
:class:`~dollar.denoiser.Denoiser`, which asks its family to run the network.

Families: ``dollar`` (the bundled teacher: Wan's transformer with MiniLM text), ``wan`` (Wan 2.1 /
Wan 2.2 single-transformer text-to-video), ``cogvideox`` (CogVideoX 2b / 5b), ``ltx`` (LTX-Video).
Internally latents are always ``[B, C, F, H, W]`` in the transformer's normalised space.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import torch

from dollar.schedule import PREDICTION_TYPES, NoiseSchedule


class UnsupportedTeacherError(ValueError):
    """A checkpoint of a kind no family handles; the message names the supported families."""


@dataclass(frozen=True)
class TeacherFamily:
    name: str
    label: str
    pipeline_classes: tuple[str, ...]
    transformer_classes: tuple[str, ...]
    max_sequence_length: int
    zero_text_padding: bool  # True: states past each prompt's last token are zero (Wan); False: the encoder's own (T5 w/o mask)
    default_height: int
    default_width: int
    default_num_frames: int
    default_guidance_scale: float

    # --- the transformer's door ----------------------------------------------------------

    def call_transformer(self, transformer, x: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor, vae_scale: tuple[int, int]):
        """The raw network output for latents ``x`` [B, C, F, H, W] at ``timestep`` [B]."""
        return transformer(hidden_states=x, timestep=timestep, encoder_hidden_states=text, return_dict=False)[0]

    # --- text -----------------------------------------------------------------------------

    @torch.no_grad()
    def encode_prompts(self, tokenizer, text_encoder, prompts: list[str], max_sequence_length: int | None = None) -> torch.Tensor:
        """Text states ``[B, L, D]`` as the stock pipeline makes them."""
        from dollar.text import encode_prompts

        length = max_sequence_length or self.max_sequence_length
        if self.zero_text_padding:
            return encode_prompts(tokenizer, text_encoder, prompts, length)
        return padded_states(tokenizer, text_encoder, prompts, length)[0]

    def text_length(self, transformer) -> int:
        """Tokens per prompt, as the stock pipeline pads them."""
        return self.max_sequence_length

    # --- shapes ---------------------------------------------------------------------------

    def vae_scale_factors(self, vae) -> tuple[int, int]:
        """(temporal, spatial) compression of the VAE."""
        return int(getattr(vae, "temporal_compression_ratio", 4)), int(getattr(vae, "spatial_compression_ratio", 8))

    def spatial_multiple(self, transformer, vae) -> int:
        """Height and width must be multiples of this (VAE factor x transformer patch)."""
        patch = transformer.config.patch_size
        patch = patch[-1] if isinstance(patch, (list, tuple)) else patch
        return self.vae_scale_factors(vae)[1] * int(patch)

    def default_size(self, transformer, vae) -> tuple[int, int, int]:
        """(height, width, num_frames) the stock pipeline uses when none is given."""
        return self.default_height, self.default_width, self.default_num_frames

    # --- schedule -------------------------------------------------------------------------

    def noise_schedule(self, scheduler, latent_shape: tuple[int, ...] | None = None) -> NoiseSchedule:
        """The forward process the teacher was trained on, read from its stock scheduler."""
        config = scheduler.config
        if is_flow_scheduler(scheduler):
            shift = config.get("flow_shift") if "flow_shift" in config else config.get("shift", 1.0)
            return NoiseSchedule.flow(float(shift or 1.0), int(config.get("num_train_timesteps", 1000)))
        return NoiseSchedule.vp(scheduler.alphas_cumprod)

    def set_timesteps(self, scheduler, num_inference_steps: int, latent_shape: tuple[int, ...], device) -> None:
        """What the stock pipeline does before its denoising loop."""
        scheduler.set_timesteps(num_inference_steps, device=device)

    # --- decoding -------------------------------------------------------------------------

    def decode(self, vae, z: torch.Tensor) -> torch.Tensor:
        """VAE latents (de-normalised) -> video [B, 3, F, H, W] in about [-1, 1]."""
        return vae.decode(z, return_dict=False)[0]


class CogVideoXFamily(TeacherFamily):
    """CogVideoX: latents [B, F, C, H, W] at the door, 3-D rotary embeddings (5b) made by the
    stock pipeline's own helper, v-prediction on a zero-terminal-SNR DDPM schedule."""

    def call_transformer(self, transformer, x, timestep, text, vae_scale):
        from diffusers import CogVideoXPipeline

        rotary = None
        if transformer.config.use_rotary_positional_embeddings:
            owner = SimpleNamespace(vae_scale_factor_spatial=vae_scale[1], transformer=transformer)
            frames, height, width = x.shape[2], x.shape[3] * vae_scale[1], x.shape[4] * vae_scale[1]
            rotary = CogVideoXPipeline._prepare_rotary_positional_embeddings(owner, height, width, frames, x.device)
        out = transformer(
            hidden_states=x.permute(0, 2, 1, 3, 4),
            encoder_hidden_states=text,
            timestep=timestep,
            image_rotary_emb=rotary,
            return_dict=False,
        )[0]
        return out.permute(0, 2, 1, 3, 4)

    def vae_scale_factors(self, vae) -> tuple[int, int]:
        return int(vae.config.temporal_compression_ratio), 2 ** (len(vae.config.block_out_channels) - 1)

    def text_length(self, transformer) -> int:
        return int(transformer.config.max_text_seq_length)  # its text positions are learned up to this length

    def default_size(self, transformer, vae):
        spatial = self.vae_scale_factors(vae)[1]
        c = transformer.config
        return c.sample_height * spatial, c.sample_width * spatial, c.sample_frames


class LTXFamily(TeacherFamily):
    """LTX-Video: latents packed into tokens, a text attention mask, rotary scale from the frame
    rate, and a flow schedule whose shift depends on the video's token count."""

    frame_rate: int = 25

    def call_transformer(self, transformer, x, timestep, text, vae_scale):
        from diffusers import LTXPipeline

        b, _, f, h, w = x.shape
        p, pt = transformer.config.patch_size, transformer.config.patch_size_t
        mask = (text.abs().amax(-1) > 0).long()  # padding states are zeroed by encode_prompts
        out = transformer(
            hidden_states=LTXPipeline._pack_latents(x, p, pt),
            encoder_hidden_states=text,
            timestep=timestep,
            encoder_attention_mask=mask,
            num_frames=f,
            height=h,
            width=w,
            rope_interpolation_scale=(vae_scale[0] / self.frame_rate, vae_scale[1], vae_scale[1]),
            return_dict=False,
        )[0]
        return LTXPipeline._unpack_latents(out, f // pt, h // p, w // p, p, pt)

    @torch.no_grad()
    def encode_prompts(self, tokenizer, text_encoder, prompts, max_sequence_length=None):
        states, mask = padded_states(tokenizer, text_encoder, prompts, max_sequence_length or self.max_sequence_length)
        # The transformer masks padding; zeroing it lets the mask travel inside the states.
        return states * mask[..., None].to(states.dtype)

    def mu(self, scheduler, latent_shape) -> float:
        from diffusers.pipelines.ltx.pipeline_ltx import calculate_shift

        c = scheduler.config
        seq = int(math.prod(latent_shape[-3:]))
        return calculate_shift(
            seq, c.get("base_image_seq_len", 256), c.get("max_image_seq_len", 4096), c.get("base_shift", 0.5), c.get("max_shift", 1.15)
        )

    def noise_schedule(self, scheduler, latent_shape=None):
        if scheduler.config.get("use_dynamic_shifting") and latent_shape is not None:
            # the dynamic shift time_shift(mu, 1, s) is the static shift k = e^mu at this size
            return NoiseSchedule.flow(math.exp(self.mu(scheduler, latent_shape)), int(scheduler.config.num_train_timesteps))
        return super().noise_schedule(scheduler, latent_shape)

    def set_timesteps(self, scheduler, num_inference_steps, latent_shape, device):
        import numpy as np

        kwargs = {"mu": self.mu(scheduler, latent_shape)} if scheduler.config.get("use_dynamic_shifting") else {}
        sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
        scheduler.set_timesteps(sigmas=sigmas, device=device, **kwargs)

    def decode(self, vae, z):
        temb = torch.zeros(z.shape[0], device=z.device, dtype=z.dtype) if vae.config.get("timestep_conditioning") else None
        return vae.decode(z, temb, return_dict=False)[0]


def padded_states(tokenizer, text_encoder, prompts: list[str], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(states [B, L, D], attention mask [B, L]): T5 run over prompts padded to ``length`` without
    an encoder mask, as the CogVideoX and LTX pipelines encode them."""
    from dollar.text import warn_truncated

    warn_truncated(tokenizer, prompts, length)
    tokens = tokenizer(prompts, padding="max_length", max_length=length, truncation=True, add_special_tokens=True, return_tensors="pt")
    device = next(text_encoder.parameters()).device
    return text_encoder(tokens.input_ids.to(device))[0], tokens.attention_mask.to(device)


FAMILIES: dict[str, TeacherFamily] = {
    f.name: f
    for f in (
        TeacherFamily(
            name="dollar",
            label="the bundled teacher (Wan transformer, MiniLM text)",
            pipeline_classes=("DollarPipeline",),
            transformer_classes=("DollarWanTransformer3DModel",),
            max_sequence_length=64,
            zero_text_padding=True,
            default_height=64,
            default_width=64,
            default_num_frames=17,
            default_guidance_scale=4.5,
        ),
        TeacherFamily(
            name="wan",
            label="Wan 2.1 / 2.2 (WanPipeline)",
            pipeline_classes=("WanPipeline",),
            transformer_classes=("WanTransformer3DModel",),
            max_sequence_length=512,
            zero_text_padding=True,
            default_height=480,
            default_width=832,
            default_num_frames=81,
            default_guidance_scale=5.0,
        ),
        CogVideoXFamily(
            name="cogvideox",
            label="CogVideoX (CogVideoXPipeline)",
            pipeline_classes=("CogVideoXPipeline",),
            transformer_classes=("CogVideoXTransformer3DModel",),
            max_sequence_length=226,
            zero_text_padding=False,
            default_height=480,
            default_width=720,
            default_num_frames=49,
            default_guidance_scale=6.0,
        ),
        LTXFamily(
            name="ltx",
            label="LTX-Video (LTXPipeline)",
            pipeline_classes=("LTXPipeline",),
            transformer_classes=("LTXVideoTransformer3DModel",),
            max_sequence_length=128,
            zero_text_padding=True,
            default_height=512,
            default_width=704,
            default_num_frames=161,
            default_guidance_scale=3.0,
        ),
    )
}

SUPPORTED = "; ".join(f.label for f in FAMILIES.values())


def get_family(name: str) -> TeacherFamily:
    if name not in FAMILIES:
        raise UnsupportedTeacherError(f"Unknown teacher family {name!r}; use one of {', '.join(FAMILIES)}.")
    return FAMILIES[name]


def detect_family(model_index: dict, where: str) -> TeacherFamily:
    """The family of a saved pipeline from its ``model_index.json``; one sentence if none fits."""
    cls = model_index.get("_class_name", "")
    if cls == "DollarPipeline":
        return get_family(model_index.get("teacher_family") or "dollar")
    for family in FAMILIES.values():
        if cls in family.pipeline_classes:
            if model_index.get("transformer_2") and model_index["transformer_2"][0] is not None:
                raise UnsupportedTeacherError(
                    f"{where} is a two-expert Wan 2.2 pipeline (transformer + transformer_2), which is not supported yet; "
                    "use a single-transformer Wan folder (Wan 2.1, Wan 2.2 TI2V-5B text-to-video)."
                )
            return family
    transformer = (model_index.get("transformer") or [None, None])[1]
    for family in FAMILIES.values():
        if transformer in family.transformer_classes:
            return family
    networks = [v[1] for v in model_index.values() if isinstance(v, (list, tuple)) and len(v) == 2 and isinstance(v[1], str)]
    image = "Image" in cls or cls.startswith(("StableDiffusion", "Flux", "PixArt", "Kandinsky", "Sana")) or any("2D" in n for n in networks)
    kind = "an image pipeline" if image else "not a text-to-video pipeline"
    raise UnsupportedTeacherError(f"{where} holds {cls or 'an unknown pipeline'} ({kind}); supported teachers are: {SUPPORTED}.")


def is_flow_scheduler(scheduler) -> bool:
    config = scheduler.config
    return (
        "FlowMatch" in type(scheduler).__name__ or bool(config.get("use_flow_sigmas")) or config.get("prediction_type") == "flow_prediction"
    )


def scheduler_prediction_type(scheduler) -> str:
    """The teacher's prediction type as the stock scheduler states it (one of PREDICTION_TYPES)."""
    if is_flow_scheduler(scheduler):
        return "flow"
    kind = scheduler.config.get("prediction_type", "epsilon")
    if kind not in PREDICTION_TYPES:
        raise UnsupportedTeacherError(
            f"the scheduler's prediction_type {kind!r} is not supported; pass --prediction_type, one of {PREDICTION_TYPES}."
        )
    return kind
