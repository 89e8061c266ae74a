"""DollarPipeline: text-to-video in diffusers' words, for the 50-step teacher and few-step students.

Teacher mode: the teacher's own scheduler (DDIM for the bundled teacher) with classifier-free
guidance. Few-step mode (a distilled student, ``student_timesteps`` in its config): the student
grid with re-noising between steps and no guidance. The teacher run on a 1/2/4-step grid is the
"teacher DDIM-k" baseline.

Any stock text-to-video folder of a supported family (Wan, CogVideoX, LTX-Video; see
:mod:`dollar.teachers`) loads too: its family, prediction type and noise schedule are read from
the folder, and sampling with its scheduler gives the stock pipeline's video.
"""

from __future__ import annotations

import math
import os
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

import dollar.models.transformer  # noqa: F401  (diffusers loads the bundled classes only once they are imported)
from dollar.denoiser import Denoiser
from dollar.models.tiny_decoder import TinyVideoDecoder, vae_fingerprint
from dollar.models.video_vae import latent_statistics
from dollar.sampling import ddim_sample, multistep_sample, scheduler_sample
from dollar.schedule import PREDICTION_TYPES, NoiseSchedule
from dollar.teachers import TeacherFamily, UnsupportedTeacherError, detect_family, get_family, scheduler_prediction_type
from dollar.text import load_text_encoder

ASSETS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")
BUNDLED_MODELS = ("teacher", "student-1", "student-2", "student-4")
OUTPUT_TYPES = ("np", "pil", "pt", "latent")
DECODERS = ("full", "tiny")
TINY_DECODER_SUBFOLDER = "tiny_decoder"  # a pipeline folder's own tiny decoder
BUNDLED_TINY_DECODER = os.path.join(ASSETS_DIR, "tiny-decoder")  # the one distilled from the bundled VAE (teacher and students share it)
MAX_GUIDANCE_SCALE = 50.0


class ModelLoadError(ValueError):
    """A model name or folder that cannot be loaded; the message says what to do."""


def is_hub_id(name: str) -> bool:
    return "/" in name and not name.startswith((".", "/", "~")) and name.count("/") == 1 and not os.path.exists(name)


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
    if is_hub_id(name_or_path):
        return name_or_path  # a hub id; from_pretrained fetches it
    raise ModelLoadError(f"Unknown model '{name_or_path}': use one of {', '.join(BUNDLED_MODELS)}, a pipeline folder, or a hub id.")


def read_model_index(path: str) -> dict:
    """The ``model_index.json`` of a pipeline folder or hub id, with one sentence when there is none."""
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "model_index.json")):
            raise ModelLoadError(
                f"{path} has no model_index.json; it is not a saved diffusers pipeline (see DollarPipeline.save_pretrained)."
            )
    try:
        return dict(DiffusionPipeline.load_config(path))
    except Exception as err:  # noqa: BLE001  (hub and JSON errors come in many types; all mean the same to a user)
        if not os.path.isdir(path):
            raise ModelLoadError(
                f"Could not fetch '{path}' from the Hugging Face Hub (offline, or no such repository); download it where there is "
                f"network (`hf download {path} --local-dir DIR`) and pass the local folder."
            ) from err
        raise ModelLoadError(f"{path}/model_index.json is not valid JSON ({err}); re-save or re-download the pipeline.") from err


def load_pipeline_text_encoder(source: str | None, dtype: torch.dtype = torch.float32):
    """(tokenizer, text_encoder) a student records by reference: the packaged MiniLM (``None`` or
    "minilm"), or the ``text_encoder``/``tokenizer`` of the teacher folder or hub id it names."""
    if not source or source == "minilm":
        return load_text_encoder()
    import transformers

    index = read_model_index(source)
    try:
        encoder_cls = getattr(transformers, index["text_encoder"][1])
        tokenizer_cls = getattr(transformers, index["tokenizer"][1])
        tokenizer = tokenizer_cls.from_pretrained(source, subfolder="tokenizer")
        encoder = encoder_cls.from_pretrained(source, subfolder="text_encoder", dtype=dtype).eval().requires_grad_(False)
    except (OSError, KeyError, TypeError, AttributeError, ValueError) as err:
        raise ModelLoadError(
            f"Could not load the text encoder this student refers to ({source}: {type(err).__name__}: {str(err)[:150]}); "
            "make that teacher folder available again, or pass text_encoder= and tokenizer= yourself."
        ) from err
    return tokenizer, encoder


class PromptEmbeddingCache:
    """Text states of recent prompts, least recently used dropped first, bounded in entries and
    bytes. An entry is one prompt's states [L, D] under a key that holds everything else that
    changes them (length, family, device, dtype, the encoder's weight version); the cache is
    bound to one tokenizer and text encoder and empties when either is replaced."""

    def __init__(self, max_entries: int = 256, max_bytes: int = 64 * 2**20):
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._entries: OrderedDict = OrderedDict()
        self._bytes = 0
        self._owners: tuple = ()
        self.hits = self.misses = 0

    def bind(self, tokenizer, text_encoder) -> None:
        """Use the cache for these objects: a different tokenizer or encoder empties it."""
        if len(self._owners) != 2 or self._owners[0]() is not tokenizer or self._owners[1]() is not text_encoder:
            self.clear()
            self._owners = tuple(weakref.ref(o) if o is not None else (lambda: None) for o in (tokenizer, text_encoder))

    def get(self, key):
        states = self._entries.get(key)
        if states is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return states

    def put(self, key, states: torch.Tensor) -> None:
        size = states.numel() * states.element_size()
        if self.max_entries < 1 or size > self.max_bytes:
            return
        if key in self._entries:
            old = self._entries.pop(key)
            self._bytes -= old.numel() * old.element_size()
        self._entries[key] = states
        self._bytes += size
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self._bytes -= old.numel() * old.element_size()

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class DollarPipelineOutput(BaseOutput):
    """``frames``: uint8 [B, T, H, W, 3] (np), lists of PIL images (pil), float [B, T, 3, H, W]
    in [0, 1] (pt), or latents [B, C, F, h, w] in the transformer's normalised space (latent);
    ``timings``: seconds spent encoding text, denoising, decoding, and the number of network
    evaluations."""

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
        student_timesteps: list | None = None,
        default_guidance_scale: float = 4.5,
        teacher_family: str = "dollar",
        text_encoder_source: str | None = None,
        max_sequence_length: int | None = None,
        default_height: int | None = None,
        default_width: int | None = None,
        default_num_frames: int | None = None,
    ):
        super().__init__()
        self.register_modules(transformer=transformer, vae=vae, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer)
        self.register_to_config(
            prediction_type=prediction_type,
            student_timesteps=list(student_timesteps) if student_timesteps else None,
            default_guidance_scale=float(default_guidance_scale),
            teacher_family=teacher_family,
            text_encoder_source=text_encoder_source,
            max_sequence_length=max_sequence_length,
            default_height=default_height,
            default_width=default_width,
            default_num_frames=default_num_frames,
        )
        self.prompt_cache = PromptEmbeddingCache()
        self._tiny_decoder: TinyVideoDecoder | None = None
        self._vae_fingerprint: tuple | None = None  # (vae, fingerprint) of the last VAE hashed

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, prediction_type: str | None = None, with_text_encoder: bool = True, **kwargs):
        """As diffusers' ``from_pretrained``, for our folders and for stock ones of a supported
        family (a ``WanPipeline``, ``CogVideoXPipeline`` or ``LTXPipeline`` folder or hub id); a
        bundled name works too. A folder saved without a text encoder gets the one its config
        refers to (the packaged MiniLM, or its teacher's). ``prediction_type`` overrides the one
        read from the folder. ``with_text_encoder=False`` skips the text encoder (prompts already
        encoded, as a trainer with a data cache has them)."""
        path = resolve_model(str(pretrained_model_name_or_path))
        index = read_model_index(path)
        try:
            family = detect_family(index, path)
        except UnsupportedTeacherError as err:
            raise ModelLoadError(str(err)) from None
        if prediction_type is not None and prediction_type not in PREDICTION_TYPES:
            raise ModelLoadError(f"prediction_type must be one of {', '.join(PREDICTION_TYPES)}, got {prediction_type!r}.")
        kwargs.setdefault("dtype", torch.float32)  # bundled weights are fp16; CPUs want fp32
        if not with_text_encoder:
            kwargs["text_encoder"] = kwargs["tokenizer"] = None
        elif kwargs.get("text_encoder") is None and kwargs.get("tokenizer") is None and (index.get("text_encoder") or [None])[0] is None:
            kwargs["tokenizer"], kwargs["text_encoder"] = load_pipeline_text_encoder(index.get("text_encoder_source"), kwargs["dtype"])
        try:
            pipe = super().from_pretrained(path, **kwargs)
        except (OSError, ValueError, RuntimeError, KeyError, TypeError, AttributeError) as err:
            raise ModelLoadError(
                f"Could not load a pipeline from {path} ({type(err).__name__}: {str(err)[:200]}); the checkpoint is missing or corrupt, re-save or re-download it."
            ) from err
        if index.get("_class_name") != "DollarPipeline":  # a stock folder: what it is, read from its parts
            try:
                stock_type = scheduler_prediction_type(pipe.scheduler)
            except UnsupportedTeacherError as err:
                if prediction_type is None:
                    raise ModelLoadError(str(err)) from None
                stock_type = prediction_type
            source = os.path.abspath(path) if os.path.isdir(path) else path
            pipe.register_to_config(
                teacher_family=family.name,
                prediction_type=stock_type,
                default_guidance_scale=family.default_guidance_scale,
                text_encoder_source=source,
            )
        if prediction_type is not None:
            pipe.register_to_config(prediction_type=prediction_type)
        pipe.transformer.eval()
        pipe.vae.eval()
        return pipe

    def save_pretrained(self, save_directory: str, include_text_encoder: bool = False, **kwargs):
        """Save as a diffusers folder. The text encoder is left out by default and referenced
        instead (``text_encoder_source``: the packaged MiniLM, or the teacher's folder or hub
        id); ``include_text_encoder=True`` keeps it. A tiny decoder in use goes to ``tiny_decoder/``."""
        if self._tiny_decoder is not None:
            self._tiny_decoder.save_pretrained(os.path.join(save_directory, TINY_DECODER_SUBFOLDER))
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
    def family(self) -> TeacherFamily:
        return get_family(self.config.teacher_family)

    @property
    def vae_scale_factors(self) -> tuple[int, int]:
        """(temporal, spatial) compression of the VAE."""
        return self.family.vae_scale_factors(self.vae)

    @property
    def vae_scale_factor_spatial(self) -> int:
        return self.vae_scale_factors[1]

    @property
    def vae_scale_factor_temporal(self) -> int:
        return self.vae_scale_factors[0]

    def default_size(self) -> tuple[int, int, int]:
        """(height, width, num_frames) when a call gives none: the checkpoint's, else its family's."""
        h, w, f = self.family.default_size(self.transformer, self.vae)
        c = self.config
        return c.default_height or h, c.default_width or w, c.default_num_frames or f

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        temporal, spatial = self.vae_scale_factors
        return (self.transformer.config.in_channels, (num_frames - 1) // temporal + 1, height // spatial, width // spatial)

    def noise_schedule(self, latent_shape: tuple[int, ...] | None = None) -> NoiseSchedule:
        """The teacher's forward process (for LTX it depends on the video size)."""
        if latent_shape is None:
            h, w, f = self.default_size()
            latent_shape = self.latent_shape(f, h, w)
        return self.family.noise_schedule(self.scheduler, latent_shape)

    def make_denoiser(self, transformer: torch.nn.Module | None = None, latent_shape: tuple[int, ...] | None = None) -> Denoiser:
        """A Denoiser over ``transformer`` (default: this pipeline's) with the teacher's schedule,
        prediction type and family: the student, fake score and EMA copies are read the same way."""
        return Denoiser(
            transformer if transformer is not None else self.transformer,
            self.noise_schedule(latent_shape),
            self.config.prediction_type,
            self.family,
            self.vae_scale_factors,
        )

    @property
    def denoiser(self) -> Denoiser:
        return self.make_denoiser()

    @property
    def is_student(self) -> bool:
        return bool(self.config.student_timesteps)

    @property
    def text_length(self) -> int:
        return self.config.max_sequence_length or self.family.text_length(self.transformer)

    def encode_text(self, prompts: list[str], max_sequence_length: int | None = None) -> torch.Tensor:
        """Text states [B, L, D] as the teacher's stock pipeline makes them. Each prompt is
        encoded once: later calls take its states from ``self.prompt_cache`` (an LRU), and the
        text encoder runs only on the prompts it does not hold."""
        length = max_sequence_length or self.text_length
        encoder = self.text_encoder
        self.prompt_cache.bind(self.tokenizer, encoder)
        # what else changes the states: the length they are padded to, how the family encodes,
        # where and in what precision the encoder runs, and its weights (an in-place update bumps _version)
        param = next(encoder.parameters(), None) if encoder is not None else None
        version = sum(p._version for p in encoder.parameters()) if encoder is not None else 0
        context = (length, self.config.teacher_family, getattr(param, "device", None), getattr(param, "dtype", None), version)
        found = {p: self.prompt_cache.get((context, p)) for p in dict.fromkeys(prompts)}
        missing = [p for p, states in found.items() if states is None]
        if missing:
            with torch.inference_mode():  # no autograd bookkeeping at all (the encoder is frozen)
                states = self.family.encode_prompts(self.tokenizer, encoder, missing, length).float()
            for p, row in zip(missing, states):
                found[p] = row.clone()  # a normal tensor, usable outside inference mode
                self.prompt_cache.put((context, p), found[p])
        return torch.stack([found[p] for p in prompts])

    def encode_prompt(self, prompt: list[str], negative_prompt: list[str] | None, max_sequence_length: int | None = None):
        cond = self.encode_text(prompt, max_sequence_length)
        uncond = None if negative_prompt is None else self.encode_text(negative_prompt, max_sequence_length)
        return cond, uncond

    def prepare_latents(self, batch_size: int, num_frames: int, height: int, width: int, generator, device) -> torch.Tensor:
        c, f, h, w = self.latent_shape(num_frames, height, width)
        if self.config.teacher_family == "cogvideox":  # drawn in its stock layout [B, F, C, H, W], so a seed gives its video
            return randn_tensor((batch_size, f, c, h, w), generator=generator, device=torch.device(device), dtype=torch.float32).permute(
                0, 2, 1, 3, 4
            )
        return randn_tensor((batch_size, c, f, h, w), generator=generator, device=torch.device(device), dtype=torch.float32)

    def internal_latents(self, latents: torch.Tensor, num_frames: int, height: int, width: int) -> torch.Tensor:
        """User ``latents=`` in the stock pipeline's layout ([B, C, F, H, W]; CogVideoX [B, F, C, H, W];
        LTX packed [B, S, D]) -> ours, [B, C, F, H, W]."""
        c, f, h, w = self.latent_shape(num_frames, height, width)
        if self.config.teacher_family == "cogvideox" and latents.ndim == 5 and latents.shape[1:] == (f, c, h, w):
            latents = latents.permute(0, 2, 1, 3, 4)
        elif self.config.teacher_family == "ltx" and latents.ndim == 3:
            from diffusers import LTXPipeline

            p, pt = self.transformer.config.patch_size, self.transformer.config.patch_size_t
            latents = LTXPipeline._unpack_latents(latents, f // pt, h // p, w // p, p, pt)
        if tuple(latents.shape[1:]) != (c, f, h, w):
            raise ValueError(
                f"latents must have shape [B, {c}, {f}, {h}, {w}] for {num_frames} frames at {height}x{width}, got {list(latents.shape)}."
            )
        return latents.float()

    def normalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        """VAE latents -> the unit-scale space the transformer works in."""
        mean, std = latent_statistics(self.vae)
        return (z - mean.to(z)) / std.to(z)

    def denormalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = latent_statistics(self.vae)
        return z * std.to(z) + mean.to(z)

    def decode_latents(self, latents: torch.Tensor, batch_size: int | None = None, decoder: str = "full") -> torch.Tensor:
        """Normalized latents -> video float [B, 3, T, H, W] in [-1, 1], ``batch_size`` clips at a
        time (all at once by default): a video VAE's decoder peak grows with every clip decoded together.
        ``decoder="tiny"``: the tiny decoder distilled from this VAE (:meth:`tiny_decoder`) instead of the VAE's."""
        chunks = latents.split(batch_size) if batch_size else (latents,)
        if decoder == "tiny":
            tiny = self.tiny_decoder()
            weight = next(tiny.parameters())  # (ModelMixin's .device/.dtype walk every submodule: a tenth of the decode)
            if weight.device != latents.device:
                tiny.to(latents.device)
                weight = next(tiny.parameters())
            videos = [tiny(z.to(weight.dtype)).sample.float().clamp(-1, 1) for z in chunks]
        else:
            videos = [self.family.decode(self.vae, self.denormalize_latents(z).to(self.vae.dtype)).float().clamp(-1, 1) for z in chunks]
        return videos[0] if len(videos) == 1 else torch.cat(videos)

    def execution_device(self) -> torch.device:
        """diffusers' ``_execution_device``, which walks every module of every component (offload
        hooks can sit on any): 2 ms on a CPU, a tenth of a one-step video. Its answer is kept while
        nothing it depends on changes: the components, their offload hooks, where their first weights are."""
        state = tuple(
            (id(m), hasattr(m, "_hf_hook"), hasattr(m, "_diffusers_hook"), next(m.parameters(), torch.empty(0)).device)
            for m in (self.transformer, self.vae, self.text_encoder)
            if isinstance(m, torch.nn.Module)
        ) + (len(getattr(self, "_all_hooks", None) or ()),)
        if getattr(self, "_device_memo", (None,))[0] != state:
            self._device_memo = (state, self._execution_device)
        return self._device_memo[1]

    def vae_fingerprint(self) -> str:
        """The VAE's fingerprint (:func:`~dollar.models.tiny_decoder.vae_fingerprint`), hashed once per VAE."""
        if self._vae_fingerprint is None or self._vae_fingerprint[0]() is not self.vae:
            self._vae_fingerprint = (weakref.ref(self.vae), vae_fingerprint(self.vae))
        return self._vae_fingerprint[1]

    def tiny_decoder(self) -> TinyVideoDecoder:
        """The tiny decoder distilled from this pipeline's VAE: the one set with
        :meth:`set_tiny_decoder`, else ``<pipeline folder>/tiny_decoder``, else the bundled
        ``assets/tiny-decoder``; the first whose recorded VAE fingerprint is this VAE's. None fits:
        ModelLoadError saying how to train one."""
        fingerprint = self.vae_fingerprint()
        if self._tiny_decoder is not None and self._tiny_decoder.config.vae_fingerprint in (None, fingerprint):
            return self._tiny_decoder
        own = self.config.get("_name_or_path") or ""
        folders = [os.path.join(own, TINY_DECODER_SUBFOLDER)] if own and os.path.isdir(own) else []
        folders.append(BUNDLED_TINY_DECODER)
        others = []
        for folder in folders:
            config_file = os.path.join(folder, "config.json")
            if not os.path.isfile(config_file):
                continue
            recorded = TinyVideoDecoder.load_config(folder).get("vae_fingerprint")
            if recorded == fingerprint:
                self._tiny_decoder = (
                    TinyVideoDecoder.from_pretrained(folder, torch_dtype=torch.float32).float().eval().requires_grad_(False)
                )
                return self._tiny_decoder.to(self.vae.device)
            others.append(folder)
        if own and os.path.abspath(own).startswith(ASSETS_DIR + os.sep):  # a bundled model: they share one tiny decoder
            vae, target = "teacher", os.path.relpath(BUNDLED_TINY_DECODER)
        elif own and os.path.isdir(own):
            vae, target = own, os.path.join(own, TINY_DECODER_SUBFOLDER)
        else:
            vae, target = "<pipeline folder>", "<pipeline folder>/tiny_decoder"
        found = f"{' and '.join(others)} {'was' if len(others) == 1 else 'were'} distilled from another VAE" if others else "there is none"
        raise ModelLoadError(
            f"No tiny decoder for this pipeline's VAE ({found}); train one with "
            f"`python train/train_tiny_decoder.py --vae {vae} --output_dir {target} --time_limit_minutes 20`, or use decoder='full'."
        )

    def set_tiny_decoder(self, tiny: TinyVideoDecoder | str | None) -> None:
        """Use ``tiny`` (a TinyVideoDecoder or its folder) for ``decoder="tiny"``; None forgets it.
        One recorded from another VAE is refused with a ValueError."""
        if isinstance(tiny, str):
            tiny = TinyVideoDecoder.from_pretrained(tiny, torch_dtype=torch.float32).float().eval().requires_grad_(False)
        if tiny is not None and tiny.config.vae_fingerprint not in (None, self.vae_fingerprint()):
            raise ValueError(
                f"This tiny decoder was distilled from another VAE (fingerprint {tiny.config.vae_fingerprint}, this VAE's is "
                f"{self.vae_fingerprint()}); retrain it with train/train_tiny_decoder.py --vae <this pipeline's vae folder>."
            )
        self._tiny_decoder = tiny

    def check_inputs(self, prompt, num_inference_steps, guidance_scale, num_frames, height, width, output_type, decoder="full"):
        if not isinstance(prompt, (str, list)) or (isinstance(prompt, list) and not all(isinstance(p, str) for p in prompt)):
            raise ValueError("prompt must be a string or a list of strings.")
        if isinstance(prompt, list) and not prompt:
            raise ValueError("prompt must not be an empty list; give at least one prompt (an empty string generates unconditionally).")
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}.")
        if num_inference_steps > self.scheduler.config.num_train_timesteps:
            raise ValueError(f"num_inference_steps must be at most {self.scheduler.config.num_train_timesteps}, got {num_inference_steps}.")
        if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)) or not math.isfinite(guidance_scale):
            raise ValueError(f"guidance_scale must be a finite number, got {guidance_scale!r}.")
        if not 0 <= guidance_scale <= MAX_GUIDANCE_SCALE:
            raise ValueError(
                f"guidance_scale must be between 0 and {MAX_GUIDANCE_SCALE:g} (1 or less turns guidance off), got {guidance_scale}."
            )
        temporal = self.vae_scale_factor_temporal
        for name, value in (("num_frames", num_frames), ("height", height), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if (num_frames - 1) % temporal != 0:
            raise ValueError(f"num_frames must be {temporal}k+1 (e.g. {4 * temporal + 1}), got {num_frames}.")
        multiple = self.family.spatial_multiple(self.transformer, self.vae)
        if height % multiple or width % multiple:
            raise ValueError(
                f"height and width must be multiples of {multiple} (the VAE factor times the patch size), got {height}x{width}."
            )
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS} ('tiny': the fast distilled decoder), got {decoder!r}.")

    def timesteps_for(self, num_inference_steps: int, schedule: NoiseSchedule | None = None) -> list:
        """The denoising grid: a student's trained grid at its own step count; otherwise the
        schedule's (DDIM's trailing grid: 1/2/4 steps are the paper's student grids)."""
        trained = self.config.student_timesteps
        if trained and num_inference_steps == len(trained):
            return list(trained)
        return (schedule or self.noise_schedule()).grid(num_inference_steps)

    # --- generation ---------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "np",
        max_sequence_length: int | None = None,
        return_dict: bool = True,
        decoder: str = "full",
    ):
        """Generate videos.

        ``num_inference_steps`` defaults to 50 for a teacher and to the trained step count for
        a student; ``guidance_scale`` (diffusers convention: ``1 + w`` of METHOD.md, off at
        <= 1) defaults to the checkpoint's ``default_guidance_scale`` (1.0 for students); height,
        width and frames to the checkpoint's (its family's for a stock folder). ``latents`` are
        the initial noise in the stock pipeline's layout for the family. ``decoder="tiny"``
        decodes with the tiny decoder distilled from the VAE (about 10x faster on a CPU, a
        preview's quality; see :meth:`tiny_decoder`). Prompts already encoded by this pipeline
        come from its prompt cache.
        """
        if num_inference_steps is None:
            num_inference_steps = len(self.config.student_timesteps) if self.is_student else 50
        if guidance_scale is None:
            guidance_scale = self.config.default_guidance_scale
        default_h, default_w, default_f = self.default_size()
        height, width, num_frames = height or default_h, width or default_w, num_frames or default_f
        self.check_inputs(prompt, num_inference_steps, guidance_scale, num_frames, height, width, output_type, decoder)
        if decoder == "tiny" and output_type != "latent":
            self.tiny_decoder()  # a missing one fails here, before any denoising
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        w = max(guidance_scale - 1.0, 0.0)
        device = self.execution_device()
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
        else:
            latents = self.internal_latents(latents, num_frames, height, width).to(device)
        schedule = self.noise_schedule(tuple(latents.shape[1:]))
        denoiser = self.make_denoiser(latent_shape=tuple(latents.shape[1:]))
        nfe = 0

        def denoise(x, t):
            nonlocal nfe
            nfe += 2 if w > 0 else 1
            return denoiser.guided(x, torch.as_tensor(t, device=x.device).expand(x.shape[0]), cond, uncond, w)

        start = time.perf_counter()
        with self.progress_bar(total=num_inference_steps) as bar:
            step_done = lambda i, t, x: bar.update()  # noqa: E731
            if self.is_student:
                x = multistep_sample(denoise, latents, self.timesteps_for(num_inference_steps, schedule), schedule, generator, step_done)
            elif self.config.teacher_family == "dollar" and type(self.scheduler).__name__ == "DDIMScheduler":
                x = ddim_sample(denoise, latents, self.timesteps_for(num_inference_steps, schedule), schedule, callback=step_done)
            else:  # the teacher's own scheduler, as its stock pipeline sets it up
                self.family.set_timesteps(self.scheduler, num_inference_steps, tuple(latents.shape[1:]), device)
                x = scheduler_sample(
                    denoise, latents, self.scheduler, schedule, self.scheduler.config.get("prediction_type", "flow"), step_done
                )
        timings["denoising_s"] = time.perf_counter() - start
        timings["nfe"] = nfe

        if output_type == "latent":
            timings["decoding_s"] = 0.0
            return DollarPipelineOutput(frames=x, timings=timings) if return_dict else (x,)
        start = time.perf_counter()
        with torch.inference_mode():
            video = self.decode_latents(x, decoder=decoder)
        timings["decoding_s"] = time.perf_counter() - start
        frames = postprocess_video(video, output_type)
        self.maybe_free_model_hooks()
        return DollarPipelineOutput(frames=frames, timings=timings) if return_dict else (frames,)


def postprocess_video(video: torch.Tensor, output_type: str):
    """[-1, 1] video [B, 3, T, H, W] -> the requested output type."""
    if output_type == "pt":
        return ((video + 1) / 2).permute(0, 2, 1, 3, 4).contiguous()
    frames = ((video + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 4, 1).cpu().numpy()
    if output_type == "pil":
        from PIL import Image

        return [[Image.fromarray(f) for f in clip] for clip in frames]
    return np.ascontiguousarray(frames)
