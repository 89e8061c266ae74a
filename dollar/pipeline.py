"""DollarPipeline: text-to-video in diffusers' words, for the 50-step teacher and few-step students.

Teacher mode: DDIM (or any diffusers scheduler) with classifier-free guidance. Few-step mode
(a distilled student, ``student_timesteps`` in its config): the student grid with re-noising
between steps and no guidance. The teacher run on a 1/2/4-step grid is the "teacher DDIM-k"
baseline.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DDIMScheduler, DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

import dollar.models.video_vae  # noqa: F401  (diffusers loads the bundled VAE class only once it is imported)
from dollar.denoiser import Denoiser
from dollar.sampling import ddim_sample, multistep_sample, scheduler_sample
from dollar.schedule import STUDENT_TIMESTEPS, trailing_timesteps
from dollar.text import DEFAULT_MAX_SEQUENCE_LENGTH, encode_prompts, load_text_encoder

ASSETS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")
BUNDLED_MODELS = ("teacher", "student-1", "student-2", "student-4")
OUTPUT_TYPES = ("np", "pil", "pt", "latent")


class ModelLoadError(ValueError):
    """A model name or folder that cannot be loaded; the message says what to do."""


def resolve_model(name_or_path: str) -> str:
    """A bundled name ('teacher', 'student-4', ...) -> its folder in assets/; a path is kept."""
    if name_or_path in BUNDLED_MODELS:
        path = os.path.join(ASSETS_DIR, name_or_path)
        if not os.path.isdir(path):
            raise ModelLoadError(f"The bundled model '{name_or_path}' is not in {ASSETS_DIR}; train it first or pass a folder.")
        return path
    if os.path.isdir(name_or_path):
        return name_or_path
    if os.path.exists(name_or_path):
        raise ModelLoadError(f"{name_or_path} is a file; give a pipeline folder (with model_index.json) or a bundled name.")
    if "/" in name_or_path and not name_or_path.startswith((".", "/")):
        return name_or_path  # a hub id; from_pretrained fetches it
    raise ModelLoadError(f"Unknown model '{name_or_path}': use one of {', '.join(BUNDLED_MODELS)}, a pipeline folder, or a hub id.")


@dataclass
class DollarPipelineOutput(BaseOutput):
    """``frames``: uint8 [B, T, H, W, 3] (np), lists of PIL images (pil), float [B, T, 3, H, W]
    in [0, 1] (pt), or latents; ``timings``: seconds spent encoding text, denoising, decoding,
    and the number of network evaluations."""

    frames: object
    timings: dict


class DollarPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "text_encoder->transformer->vae"
    _optional_components = ["text_encoder", "tokenizer"]

    def __init__(
        self,
        transformer,
        vae,
        scheduler,
        text_encoder=None,
        tokenizer=None,
        prediction_type: str = "conjugate_velocity",
        student_timesteps: list[int] | None = None,
        default_guidance_scale: float = 4.5,
    ):
        super().__init__()
        self.register_modules(transformer=transformer, vae=vae, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer)
        self.register_to_config(
            prediction_type=prediction_type,
            student_timesteps=list(student_timesteps) if student_timesteps else None,
            default_guidance_scale=float(default_guidance_scale),
        )
        self.vae_scale_factor_spatial = getattr(vae, "spatial_compression_ratio", 8)
        self.vae_scale_factor_temporal = getattr(vae, "temporal_compression_ratio", 4)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """As diffusers' ``from_pretrained``; a bundled name works too, and a folder saved without
        a text encoder gets the packaged MiniLM (the bundled checkpoints ship none)."""
        path = resolve_model(str(pretrained_model_name_or_path))
        if os.path.isdir(path) and not os.path.exists(os.path.join(path, "model_index.json")):
            raise ModelLoadError(f"{path} has no model_index.json; it is not a saved pipeline (see DollarPipeline.save_pretrained).")
        if kwargs.get("text_encoder") is None and kwargs.get("tokenizer") is None:
            has_te = os.path.isdir(os.path.join(path, "text_encoder")) if os.path.isdir(path) else True
            if not has_te:
                kwargs["tokenizer"], kwargs["text_encoder"] = load_text_encoder()
        kwargs.setdefault("dtype", torch.float32)  # bundled weights are fp16; CPUs want fp32
        try:
            pipe = super().from_pretrained(path, **kwargs)
        except (OSError, ValueError, RuntimeError, KeyError) as err:
            raise ModelLoadError(
                f"Could not load a pipeline from {path} ({type(err).__name__}: {str(err)[:200]}); the checkpoint is missing or corrupt, re-save or re-download it."
            ) from err
        pipe.transformer.eval()
        pipe.vae.eval()
        return pipe

    def save_pretrained(self, save_directory: str, include_text_encoder: bool = False, **kwargs):
        """Save as a diffusers folder. The text encoder is left out by default (it ships in its
        own package and is 90 MB); ``include_text_encoder=True`` keeps it."""
        if include_text_encoder:
            return super().save_pretrained(save_directory, **kwargs)
        te, tok = self.text_encoder, self.tokenizer
        self.register_modules(text_encoder=None, tokenizer=None)
        try:
            super().save_pretrained(save_directory, **kwargs)
        finally:
            self.register_modules(text_encoder=te, tokenizer=tok)

    # --- pieces -------------------------------------------------------------------------

    @property
    def denoiser(self) -> Denoiser:
        return Denoiser(self.transformer, self.scheduler.alphas_cumprod, self.config.prediction_type)

    @property
    def is_student(self) -> bool:
        return bool(self.config.student_timesteps)

    def encode_prompt(self, prompt: list[str], negative_prompt: list[str] | None, max_sequence_length: int = DEFAULT_MAX_SEQUENCE_LENGTH):
        cond = encode_prompts(self.tokenizer, self.text_encoder, prompt, max_sequence_length)
        uncond = (
            None if negative_prompt is None else encode_prompts(self.tokenizer, self.text_encoder, negative_prompt, max_sequence_length)
        )
        return cond, uncond

    def prepare_latents(self, batch_size: int, num_frames: int, height: int, width: int, generator, device) -> torch.Tensor:
        shape = (
            batch_size,
            self.transformer.config.in_channels,
            (num_frames - 1) // self.vae_scale_factor_temporal + 1,
            height // self.vae_scale_factor_spatial,
            width // self.vae_scale_factor_spatial,
        )
        return randn_tensor(shape, generator=generator, device=torch.device(device), dtype=torch.float32)

    def normalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        """VAE latents -> the unit-scale space the transformer works in."""
        mean, std = latent_statistics(self.vae)
        return (z - mean.to(z)) / std.to(z)

    def denormalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = latent_statistics(self.vae)
        return z * std.to(z) + mean.to(z)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalized latents -> video float [B, 3, T, H, W] in [-1, 1]."""
        z = self.denormalize_latents(latents).to(self.vae.dtype)
        return self.vae.decode(z, return_dict=False)[0].float().clamp(-1, 1)

    def check_inputs(self, prompt, num_inference_steps, guidance_scale, num_frames, height, width, output_type):
        if not isinstance(prompt, (str, list)) or (isinstance(prompt, list) and not all(isinstance(p, str) for p in prompt)):
            raise ValueError("prompt must be a string or a list of strings.")
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}.")
        if num_inference_steps > self.scheduler.config.num_train_timesteps:
            raise ValueError(f"num_inference_steps must be at most {self.scheduler.config.num_train_timesteps}, got {num_inference_steps}.")
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0 (1 or less turns guidance off), got {guidance_scale}.")
        if (num_frames - 1) % self.vae_scale_factor_temporal != 0 or num_frames < 1:
            raise ValueError(f"num_frames must be {self.vae_scale_factor_temporal}k+1 (e.g. 17), got {num_frames}.")
        if height % self.vae_scale_factor_spatial or width % self.vae_scale_factor_spatial:
            raise ValueError(f"height and width must be multiples of {self.vae_scale_factor_spatial}, got {height}x{width}.")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}.")

    def timesteps_for(self, num_inference_steps: int) -> list[int]:
        """The denoising grid: the student grids for 1/2/4 steps, the trailing DDIM grid otherwise."""
        if num_inference_steps in STUDENT_TIMESTEPS:
            return list(STUDENT_TIMESTEPS[num_inference_steps])
        return trailing_timesteps(num_inference_steps, self.scheduler.config.num_train_timesteps)

    # --- generation ---------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        num_frames: int = 17,
        height: int = 64,
        width: int = 64,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "np",
        max_sequence_length: int = DEFAULT_MAX_SEQUENCE_LENGTH,
        return_dict: bool = True,
    ):
        """Generate videos.

        ``num_inference_steps`` defaults to 50 for a teacher and to the trained step count for
        a student; ``guidance_scale`` (diffusers convention: ``1 + w`` of METHOD.md, off at
        <= 1) defaults to the checkpoint's ``default_guidance_scale`` (1.0 for students).
        """
        if num_inference_steps is None:
            num_inference_steps = len(self.config.student_timesteps) if self.is_student else 50
        if guidance_scale is None:
            guidance_scale = self.config.default_guidance_scale
        self.check_inputs(prompt, num_inference_steps, guidance_scale, num_frames, height, width, output_type)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        w = max(guidance_scale - 1.0, 0.0)
        device = self._execution_device
        timings = {}

        start = time.perf_counter()
        negatives = None
        if w > 0:
            negative_prompt = negative_prompt or ""
            negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt)
        cond, uncond = self.encode_prompt(prompts, negatives, max_sequence_length)
        timings["text_encoding_s"] = time.perf_counter() - start

        if latents is None:
            latents = self.prepare_latents(len(prompts), num_frames, height, width, generator, device)
        denoiser = self.denoiser
        nfe = 0

        def denoise(x, t):
            nonlocal nfe
            nfe += 2 if w > 0 else 1
            tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
            return denoiser.guided(x, tt, cond, uncond, w)

        start = time.perf_counter()
        alphas = self.scheduler.alphas_cumprod
        with self.progress_bar(total=num_inference_steps) as bar:
            step_done = lambda i, t, x: bar.update()  # noqa: E731
            if self.is_student:
                x = multistep_sample(denoise, latents, self.timesteps_for(num_inference_steps), alphas, generator, step_done)
            elif isinstance(self.scheduler, DDIMScheduler):
                x = ddim_sample(denoise, latents, self.timesteps_for(num_inference_steps), alphas, callback=step_done)
            else:
                x = scheduler_sample(denoise, latents, self.scheduler, num_inference_steps, step_done)
        timings["denoising_s"] = time.perf_counter() - start
        timings["nfe"] = nfe

        if output_type == "latent":
            timings["decoding_s"] = 0.0
            return DollarPipelineOutput(frames=x, timings=timings) if return_dict else (x,)
        start = time.perf_counter()
        video = self.decode_latents(x)
        timings["decoding_s"] = time.perf_counter() - start
        frames = postprocess_video(video, output_type)
        self.maybe_free_model_hooks()
        return DollarPipelineOutput(frames=frames, timings=timings) if return_dict else (frames,)


def latent_statistics(vae) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (mean, std) [1, C, 1, 1, 1] that bring a VAE's latents to unit scale, from
    whichever form the VAE keeps them in: buffers (ours, LTX), config lists (Wan), or a
    scaling factor (the image VAEs)."""
    if isinstance(getattr(vae, "latents_mean", None), torch.Tensor):
        mean, std = vae.latents_mean, vae.latents_std
    elif getattr(vae.config, "latents_mean", None) is not None:
        mean, std = torch.tensor(vae.config.latents_mean), torch.tensor(vae.config.latents_std)
    else:
        channels = vae.config.latent_channels
        mean, std = torch.zeros(channels), torch.full((channels,), 1.0 / getattr(vae.config, "scaling_factor", 1.0))
    return mean.view(1, -1, 1, 1, 1).float(), std.view(1, -1, 1, 1, 1).float()


def postprocess_video(video: torch.Tensor, output_type: str):
    """[-1, 1] video [B, 3, T, H, W] -> the requested output type."""
    if output_type == "pt":
        return ((video + 1) / 2).permute(0, 2, 1, 3, 4).contiguous()
    frames = ((video + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 4, 1).cpu().numpy()
    if output_type == "pil":
        from PIL import Image

        return [[Image.fromarray(f) for f in clip] for clip in frames]
    return np.ascontiguousarray(frames)
