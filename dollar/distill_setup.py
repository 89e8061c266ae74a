"""The distillation trainer's building blocks (``train/distill.py`` orders them; the losses live in
``dollar/losses.py``, checkpoints go through ``dollar/checkpointing.py``).

- the run: config checks, the teacher, the student's grid and size, the encoded data and its cache;
- the networks: teacher, student, fake score and CD target (EMA), full copies or LoRA adapters on
  one base (``dollar/lora.py``), the latent reward model, the optimisers, and how they are spread
  over processes: DDP (everything replicated; with LoRA the adapters' gradients averaged), FSDP2
  (student, fake score, teacher and EMA sharded block by block, or the LoRA base with its adapters;
  the latent reward model replicated);
- one optimiser step, the EMA update, the student's training input, DDPO's policy;
- validation on held-out prompts, rollback to a healthy checkpoint, the memory plan check, and the
  final save (sharded weights gathered by every process, written by the main one).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import json
import os
from dataclasses import asdict, dataclass

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from dollar import world
from dollar.checker import checker_accuracy
from dollar.checkpointing import complete_checkpoints
from dollar.data import VideoFolderDataset, WorldVideoDataset, encode_dataset
from dollar.lora import AdapterView, active_adapter, add_adapters, merged_student, save_student_adapter, update_ema_adapter
from dollar.models import LatentRewardModel
from dollar.pipeline import DollarPipeline, ModelLoadError, postprocess_video, resolve_model
from dollar.rewards import parse_reward_spec, weighted_reward
from dollar.sampling import multistep_sample, student_training_input
from dollar.schedule import PREDICTION_TYPES, NoiseSchedule
from dollar.sentinel import CollapseSentinel, video_health
from dollar.video import save_video

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# ----------------------------------------------------------------------------- the run


def check_config(cfg) -> None:
    """Every user error, with one sentence, before any work starts."""
    if cfg.timesteps:
        try:
            values = [float(t) for t in cfg.timesteps.split(",")]
        except ValueError:
            raise SystemExit(f"error: --timesteps must be comma-separated numbers, e.g. 999,499; got {cfg.timesteps!r}.") from None
        if values != sorted(set(values), reverse=True):
            raise SystemExit(f"error: --timesteps must be distinct and descending (noisiest first), e.g. 999,499; got {cfg.timesteps!r}.")
    elif not 1 <= cfg.num_steps <= 50:
        raise SystemExit(f"error: --num_steps must be between 1 and 50 (1, 2 or 4 are the paper's grids), got {cfg.num_steps}.")
    if cfg.weight_dtype not in DTYPES:
        raise SystemExit(f"error: --weight_dtype must be one of {', '.join(DTYPES)}, got {cfg.weight_dtype!r}.")
    if cfg.lora_rank < 0:
        raise SystemExit(f"error: --lora_rank must be 0 (full fine-tuning) or a positive rank, got {cfg.lora_rank}.")
    if cfg.prediction_type and cfg.prediction_type not in PREDICTION_TYPES:
        raise SystemExit(f"error: --prediction_type must be one of {', '.join(PREDICTION_TYPES)}, got {cfg.prediction_type!r}.")
    if min(cfg.height, cfg.width, cfg.num_frames) < 0:
        raise SystemExit("error: --height, --width and --num_frames must be positive (0 = the teacher's default).")
    weights = {"vsd": cfg.vsd * cfg.vsd_weight, "cd": cfg.cd * cfg.cd_weight, "lrm": cfg.lrm * cfg.reward_weight}
    if all(w <= 0 for w in weights.values()):
        raise SystemExit("error: every loss is off or weighted zero; enable at least one of --vsd, --cd, --lrm with a positive weight.")
    if cfg.lrm:
        check_rewards(cfg)
    if cfg.batch_size < 1 or cfg.max_iters < (0 if cfg.init_student else 1) or cfg.fake_steps < 0 or cfg.cd_skip < 1:
        raise SystemExit(
            "error: batch_size, max_iters and cd_skip must be positive and fake_steps non-negative "
            "(max_iters 0 is allowed with --init_student: it re-grids that student without training)."
        )
    if cfg.reward_method not in ("lrm", "ddpo"):
        raise SystemExit(f"error: --reward_method must be 'lrm' or 'ddpo', got {cfg.reward_method!r}.")
    if cfg.validate_every < 0 or cfg.validation_prompts < 1 or cfg.ddpo_sigma <= 0:
        raise SystemExit("error: validate_every must be >= 0, validation_prompts >= 1 and ddpo_sigma > 0.")
    if cfg.report_to not in ("none", "") and cfg.report_to == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        raise SystemExit("error: --report_to tensorboard needs the tensorboard package; pip install tensorboard or pass --report_to none.")
    if cfg.init_student:
        try:
            resolve_model(cfg.init_student)
        except ModelLoadError as err:
            raise SystemExit(f"error: --init_student: {err} Train that student first (see the config file's comment).") from None
    if cfg.resume and cfg.resume != "latest" and not os.path.isdir(cfg.resume):
        raise SystemExit(f"error: --resume {cfg.resume} is not a checkpoint folder; use 'latest' or an existing folder.")


def check_launch(cfg, accelerator) -> None:
    """What accelerate's launch config allows, in one sentence before any work starts."""
    if str(accelerator.distributed_type).endswith("FSDP") and not accelerator.is_fsdp2:
        raise SystemExit("error: the trainer shards with FSDP2; set fsdp_version: 2 in the accelerate config (see accelerate-fsdp.yaml).")
    if accelerator.is_fsdp2 and accelerator.mixed_precision == "fp16":
        raise SystemExit("error: sharded (FSDP) distillation takes --mixed_precision bf16 or no, not fp16.")


def load_teacher(name: str, prediction_type: str = "", with_text_encoder: bool = True) -> DollarPipeline:
    try:
        pipe = DollarPipeline.from_pretrained(name, prediction_type=prediction_type or None, with_text_encoder=with_text_encoder)
    except ModelLoadError as err:
        raise SystemExit(f"error: {err}") from None
    if pipe.is_student:
        raise SystemExit(f"error: {name} is already a distilled student; give a teacher pipeline.")
    return pipe


def training_size(pipe: DollarPipeline, cfg) -> tuple[int, int, int]:
    """(num_frames, height, width) of the training clips: the flags, else the teacher's default."""
    h, w, f = pipe.default_size()
    return cfg.num_frames or f, cfg.height or h, cfg.width or w


def check_training_size(pipe: DollarPipeline, cfg) -> tuple[int, int, int]:
    """:func:`training_size`, refused in one sentence when the teacher cannot take it."""
    num_frames, height, width = training_size(pipe, cfg)
    try:
        pipe.check_inputs("", 1, 1.0, num_frames, height, width, "np")
    except ValueError as err:
        raise SystemExit(f"error: {err} Pass --height, --width and --num_frames that fit the teacher.") from None
    return num_frames, height, width


def student_grid(cfg, schedule: NoiseSchedule) -> list:
    """The student's timesteps on the teacher's schedule: ``--timesteps``, else the schedule's
    ``num_steps`` grid (VP: 999 / 999, 499 / 999, 749, 499, 249; flow: shifted s = 1, 1 - 1/n, ...)."""
    if cfg.timesteps:
        try:
            return schedule.check_grid(float(t) for t in cfg.timesteps.split(","))
        except ValueError as err:
            raise SystemExit(f"error: --timesteps: {err}.") from None
    return schedule.grid(cfg.num_steps)


def validation_set(cfg, prompts: list[str]) -> list[str]:
    """Held-out world prompts (never seen in training) for the built-in world; else the first captions."""
    if cfg.data:
        return prompts[: cfg.validation_prompts]
    return [p.prompt for p in world.heldout_prompts(max(cfg.validation_prompts, 1))][: cfg.validation_prompts]


def cache_key(pipe, cfg, val_prompts: list[str]) -> str:
    """Fingerprint of what the cached data depends on: the VAE weights, the text encoder, the clips
    and the validation prompts."""
    h = hashlib.sha256()
    for name, tensor in sorted(pipe.vae.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(str(pipe.config.text_encoder_source or "minilm").encode())
    h.update("\n".join(val_prompts).encode())
    h.update(f"{cfg.data or 'world'}|{cfg.num_clips}|{pipe.config.teacher_family}|{pipe.text_length}|{training_size(pipe, cfg)}".encode())
    return h.hexdigest()


def load_cache(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The cached tensors and their metadata (caches written before keys existed have none)."""
    with safe_open(path, framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}


@dataclass
class TrainingData:
    latents: torch.Tensor  # [N, C, F, h, w] encoded clips (fp16, host RAM)
    text_states: torch.Tensor  # [N, L, D] their captions, encoded
    null_states: torch.Tensor  # [1, L, D] the empty prompt
    val_states: torch.Tensor  # [V, L, D] the validation prompts
    prompts: list[str]
    val_prompts: list[str]


def prepared_data(cfg, pipe: DollarPipeline, cache_path: str, device, is_main_process: bool) -> TrainingData:
    """Clips, captions and validation prompts, encoded once and cached at ``cache_path``; the text
    encoder is dropped afterwards, so it is never resident while training."""
    num_frames, height, width = training_size(pipe, cfg)
    size = dict(num_frames=num_frames, height=height, width=width)
    clips = VideoFolderDataset(cfg.data, **size) if cfg.data else WorldVideoDataset(cfg.num_clips, seed=1_000_000, **size)
    prompts = [clips.captions(i, 1)[0] for i in range(len(clips))]
    val_prompts = validation_set(cfg, prompts)
    key = cache_key(pipe, cfg, val_prompts)
    if os.path.exists(cache_path):
        cache, meta = load_cache(cache_path)
        if meta.get("key", key) != key:
            raise SystemExit(
                f"error: the cache {cache_path} was encoded with another VAE, text encoder or data; "
                "delete it or pass a different --cache_dir."
            )
    else:
        pipe.text_encoder.to(device, DTYPES[cfg.weight_dtype])
        cache = encode_dataset(pipe.vae, pipe.encode_text, clips, 1, progress=is_main_process)
        cache["val_states"] = pipe.encode_text(val_prompts).float().cpu().half()
        if is_main_process:
            os.makedirs(os.path.dirname(cache_path), exist_ok=True)
            save_file(cache, cache_path + ".tmp", metadata={"key": key})
            os.replace(cache_path + ".tmp", cache_path)
    pipe.register_modules(text_encoder=None, tokenizer=None)
    return TrainingData(cache["latents"], cache["text_states"][:, 0], cache["null_states"], cache["val_states"], prompts, val_prompts)


# ----------------------------------------------------------------------------- the networks


@dataclass
class Networks:
    """The four roles of METHOD.md section 3; with LoRA they are views of ``lora_base``."""

    teacher: torch.nn.Module
    student: torch.nn.Module
    fake: torch.nn.Module
    ema: torch.nn.Module
    lora_base: torch.nn.Module | None = None


def build_networks(cfg, pipe: DollarPipeline, device) -> Networks:
    """Teacher, student, fake score and EMA target, each on ``device``.

    Full: the student and fake score are fp32 copies of the teacher (accelerate's mixed precision
    autocasts them); the frozen teacher and the EMA target are in ``weight_dtype``. LoRA: one
    frozen base in ``weight_dtype`` carries adapters student / fake / ema (dollar/lora.py).
    """
    base = pipe.transformer.to(device)
    if cfg.lora_rank:
        cast_frozen(base, DTYPES[cfg.weight_dtype]).requires_grad_(False)
        add_adapters(base, cfg.lora_rank, cfg.lora_alpha or None)
        if cfg.gradient_checkpointing:
            base.enable_gradient_checkpointing()
        views = [AdapterView(base, role) for role in (None, "student", "fake", "ema")]
        views[1].train()
        views[2].train()
        return Networks(*views, lora_base=base)
    student = copy.deepcopy(base).float().requires_grad_(True).train()
    fake = copy.deepcopy(base).float().requires_grad_(True).train()
    if cfg.gradient_checkpointing:
        student.enable_gradient_checkpointing()
        fake.enable_gradient_checkpointing()
    ema = cast_frozen(copy.deepcopy(base), DTYPES[cfg.weight_dtype]).requires_grad_(False).eval()
    teacher = cast_frozen(base, DTYPES[cfg.weight_dtype]).requires_grad_(False).eval()
    return Networks(teacher, student, fake, ema)


def cast_frozen(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """``model`` in ``dtype``, except the modules its class keeps in fp32 (diffusers' ``_keep_in_fp32_modules``)."""
    if dtype == torch.float32:
        return model.float()
    torch.nn.Module.to(model, dtype)  # nn.Module's own: ModelMixin.to warns about the modules restored just below
    keep = getattr(model, "_keep_in_fp32_modules", None) or []
    for name, module in model.named_modules():
        if any(k in name.split(".") for k in keep):
            module.float()
    return model


@torch.no_grad()
def load_student_init(name: str, teacher: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The transformer weights of pipeline ``name``, checked to fit the teacher's architecture."""
    try:
        weights = DollarPipeline.from_pretrained(name).transformer.state_dict()
    except ModelLoadError as err:
        raise SystemExit(f"error: --init_student: {err}") from None
    own = teacher.state_dict()
    if weights.keys() != own.keys() or any(weights[k].shape != own[k].shape for k in own):
        raise SystemExit(
            f"error: --init_student {name} has a different transformer architecture from the teacher; give a student of this teacher."
        )
    return weights


def reward_network(latent_channels: int, latent_height: int, text_dim: int = 0, **kwargs) -> LatentRewardModel:
    """The paper's small latent network (conv 4x4/4 ...); stride 2 on latents of 16 pixels or fewer."""
    stride = 2 if latent_height <= 16 else 4
    return LatentRewardModel(latent_channels=latent_channels, first_kernel=stride, first_stride=stride, text_dim=text_dim, **kwargs)


def latent_reward_model(cfg, data: TrainingData) -> LatentRewardModel:
    """The latent reward model fitted online to the black-box rewards (text-conditioned unless told otherwise)."""
    _, c, _, h, _ = data.latents.shape
    return reward_network(c, h, data.text_states.shape[-1] if cfg.lrm_text_conditioned else 0)


def check_rewards(cfg) -> None:
    """``--reward`` parsed (:func:`dollar.rewards.parse_reward_spec`), its preference folders
    loadable, and DDPO given black-box rewards only; else one sentence."""
    from dollar.preferences import load_preference_reward

    try:
        terms = parse_reward_spec(cfg.reward)
        for term in terms:
            if term.is_preference:
                load_preference_reward(term.path)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    if cfg.reward_method == "ddpo" and any(t.is_preference for t in terms):
        raise SystemExit("error: DDPO scores decoded pixels; a preference: reward scores latents, so use it with --reward_method lrm.")


@dataclass
class Rewards:
    """What the student climbs: ``pixel``, the black-box rewards' weighted sum (decoded pixels; the
    online latent reward model fits it), and ``frozen``, pretrained latent rewards with their weights
    (``preference:<folder>``; never fitted, no decoding)."""

    pixel: object
    frozen: list

    def frozen_scores(self, latents: torch.Tensor) -> torch.Tensor:
        """sum_k w_k R_k(latents), [B] (zeros without frozen rewards); gradients reach ``latents``."""
        return sum((w * model(latents) for model, w in self.frozen), torch.zeros(len(latents), device=latents.device))


def build_rewards(cfg, latent_channels: int, device) -> Rewards:
    """The rewards ``--reward`` names (the pixel one is also what validation reports)."""
    from dollar.preferences import load_preference_reward

    if not (cfg.lrm or cfg.validate_every):
        return Rewards(None, [])
    terms = parse_reward_spec(cfg.reward)
    frozen = [(load_preference_reward(t.path).to(device), t.weight) for t in terms if t.is_preference] if cfg.lrm else []
    for (model, _), term in zip(frozen, [t for t in terms if t.is_preference]):
        if model.config.latent_channels != latent_channels:
            raise SystemExit(
                f"error: {term.path} scores {model.config.latent_channels}-channel latents, this teacher's have {latent_channels}; "
                "train the preference reward on votes for models of this teacher."
            )
    return Rewards(weighted_reward(terms), frozen)


def optimizer_class(cfg):
    """AdamW, or bitsandbytes' 8-bit AdamW (CUDA) with --optimizer_8bit."""
    if not cfg.optimizer_8bit:
        return torch.optim.AdamW
    try:
        import bitsandbytes
    except ImportError:
        raise SystemExit("error: --optimizer_8bit needs bitsandbytes on a CUDA machine (pip install bitsandbytes).") from None
    return bitsandbytes.optim.AdamW8bit


def prepare_networks(accelerator, cfg, nets: Networks, reward_model, opt_g, opt_f, opt_r):
    """Spread the networks over the launch's processes; returns (nets, reward_model, opt_g, opt_f, opt_r).

    - DDP or one process: student, fake score and reward model through ``accelerator.prepare``; the
      frozen teacher and EMA replicated.
    - FSDP2 (``accelerate-fsdp.yaml``): student and fake score through ``accelerator.prepare`` (one
      model per call, as accelerate's FSDP2 wants), the frozen teacher and EMA sharded the same way
      (:func:`shard`: gathered for each forward, freed after it); the small latent reward model
      replicated with plain DDP.
    - LoRA: with DDP the frozen base is replicated and the adapters' gradients are averaged in
      :func:`optimizer_step`; with FSDP2 the base is sharded with its adapters (FSDP2 reduces their
      gradients), the optimisers switched to the adapters' shards.
    What accelerate does not prepare is registered for checkpointing, whole (:class:`FullState`,
    :class:`OptimizerState`).
    """
    base = nets.lora_base
    if base is not None and not accelerator.is_fsdp2:
        reward_model, opt_g, opt_f, opt_r = accelerator.prepare(reward_model, opt_g, opt_f, opt_r)
        accelerator.register_for_checkpointing(FullState(base, only="lora_"))
        return nets, reward_model, opt_g, opt_f, opt_r
    if base is not None:
        shard(accelerator, base, opt_g, opt_f)
        reward_model = replicate(accelerator, reward_model.to(accelerator.device), cfg.find_unused_parameters)
        states = (FullState(base, only="lora_"), OptimizerState(base, opt_g), OptimizerState(base, opt_f))
        accelerator.register_for_checkpointing(*states, unwrapped(reward_model), opt_r)
        return nets, reward_model, opt_g, opt_f, opt_r
    if accelerator.is_fsdp2:
        nets.student, opt_g = accelerator.prepare(nets.student, opt_g)
        nets.fake, opt_f = accelerator.prepare(nets.fake, opt_f)
        shard(accelerator, nets.teacher)
        shard(accelerator, nets.ema)
        reward_model = replicate(accelerator, reward_model.to(accelerator.device), cfg.find_unused_parameters)
        accelerator.register_for_checkpointing(FullState(nets.ema), unwrapped(reward_model), opt_r)
        return nets, reward_model, opt_g, opt_f, opt_r
    nets.student, nets.fake, reward_model, opt_g, opt_f, opt_r = accelerator.prepare(
        nets.student, nets.fake, reward_model, opt_g, opt_f, opt_r
    )
    accelerator.register_for_checkpointing(FullState(nets.ema))
    return nets, reward_model, opt_g, opt_f, opt_r


def shard(accelerator, model: torch.nn.Module, *optimizers) -> torch.nn.Module:
    """Shard ``model`` with FSDP2 as accelerate shards the ones it prepares (the config's layer class
    as units, then the root; the same mesh), gathered for each forward and freed after it: the
    frozen teacher and EMA, and the LoRA base with its adapters. ``optimizers`` (not stepped yet)
    are switched to the sharded parameters."""
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy, get_module_children_bottom_up
    from torch.distributed.fsdp import FSDPModule, fully_shard

    names = {p: n for n, p in model.named_parameters()}
    mesh = getattr(accelerator, "torch_device_mesh", None)
    mesh = mesh[tuple(accelerator.parallelism_config.fsdp_dim_names)] if mesh is not None else None
    policy = fsdp2_prepare_auto_wrap_policy(accelerator.state.fsdp_plugin, model)
    for module in get_module_children_bottom_up(model)[:-1]:
        if policy is not None and policy(module) and not isinstance(module, FSDPModule):
            fully_shard(module, mesh=mesh, reshard_after_forward=True)
    fully_shard(model, mesh=mesh, reshard_after_forward=True)
    sharded = dict(model.named_parameters())
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["params"] = [sharded[names[p]] for p in group["params"]]
    return model


def unwrapped(module: torch.nn.Module) -> torch.nn.Module:
    return module.module if isinstance(module, torch.nn.parallel.DistributedDataParallel) else module


def replicate(accelerator, module: torch.nn.Module, find_unused_parameters: bool = False) -> torch.nn.Module:
    """``module`` replicated on every process with its gradients averaged (plain DDP)."""
    if accelerator.num_processes == 1:
        return module
    device_ids = [accelerator.device.index] if accelerator.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=find_unused_parameters)


def is_sharded(module: torch.nn.Module) -> bool:
    """Whether ``module`` (or the base of a LoRA view) is sharded with FSDP2."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(getattr(module, "base", module), FSDPModule)


def full_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole state dict, on the CPU. A sharded module is gathered parameter by parameter (a
    collective: every process must call this) and only the main process keeps the result; the
    others get an empty dict."""
    if not is_sharded(module):
        return {k: v.detach() for k, v in module.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


class FullState:
    """A module for ``accelerator.register_for_checkpointing`` whose checkpoint holds its whole
    weights (those whose names contain ``only``, e.g. the LoRA adapters) even when it is sharded:
    every process takes part in the gather, accelerate writes the main process's copy; loading
    gives each process its own shard of them."""

    def __init__(self, module: torch.nn.Module, only: str = ""):
        self.module, self.only = module, only

    def state_dict(self) -> dict[str, torch.Tensor]:
        if not self.only:
            return full_state_dict(self.module)
        return {
            n: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().cpu().clone()
            for n, p in self.module.named_parameters()
            if self.only in n
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        from torch.distributed.tensor import DTensor, distribute_tensor

        own = self.module.state_dict()
        for name, value in state.items():
            target = own[name]
            if isinstance(target, DTensor):  # every process read the whole tensor: keep this one's shard
                value = distribute_tensor(value.to(target.dtype), target.device_mesh, target.placements, src_data_rank=None)
                target.to_local().copy_(value.to_local())
            else:
                target.copy_(value)


class OptimizerState:
    """An optimiser over sharded parameters of ``model`` for ``accelerator.register_for_checkpointing``:
    saved whole (gathered; accelerate writes the main process's copy), loaded back shard by shard."""

    def __init__(self, model: torch.nn.Module, optimizer):
        self.model, self.optimizer = model, optimizer

    def state_dict(self) -> dict:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_optimizer_state_dict(self.model, self.optimizer, options=options)

    def load_state_dict(self, state: dict) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(self.model, self.optimizer, state, options=StateDictOptions(full_state_dict=True))


def unsharded_copy(module: torch.nn.Module, dtype: torch.dtype | None = torch.float32, adapters=None) -> torch.nn.Module | None:
    """A plain copy of ``module`` (in ``dtype``; None keeps its own) for export. A sharded one is
    gathered first (every process must call this) and rebuilt from its config on the main process
    only (``adapters(copy)`` adds the LoRA adapters before the weights load); the others get None."""
    if not is_sharded(module):
        plain = copy.deepcopy(module)
        return (plain.to(dtype) if dtype else plain).eval()
    from torch.distributed.fsdp import FSDPModule

    state = full_state_dict(module)
    if not state:
        return None
    cls = next(c for c in type(module).__mro__ if not issubclass(c, FSDPModule))  # fully_shard subclasses the module's class
    plain = cls.from_config(module.config)
    if adapters is not None:
        adapters(plain)
    plain.load_state_dict(state)
    return (plain.to(dtype) if dtype else plain).eval()


# ----------------------------------------------------------------------------- one iteration's parts


def batch_generator(seed: int, iteration: int, process_index: int) -> torch.Generator:
    """All of an iteration's randomness (batch, noise, timesteps) on one process: a function of the
    iteration, so a resumed run draws exactly what the uninterrupted one did."""
    return torch.Generator().manual_seed(seed * 1_000_003 + iteration * 7919 + process_index)


def student_input(denoise, grid: list, schedule: NoiseSchedule, shape, generator, device) -> tuple[torch.Tensor, int]:
    """A random student step and the input the student sees there (fresh noise, earlier steps
    simulated without gradients)."""
    noise = torch.randn(shape, generator=generator).to(device)
    step = int(torch.randint(0, len(grid), (1,), generator=generator))
    return student_training_input(denoise, noise, grid, schedule, step, generator), step


def scaled_policy(denoise, scales: dict):
    """DDPO's policy mean at a recorded step: the step's scale times the student's x0_hat."""
    return lambda x, t: scales[float(t[0])] * denoise(x, t)[0]


def training_role(lora_base, role: str):
    """With LoRA, backward runs with the trained adapter active (gradient checkpointing recomputes
    the forward then); a no-op otherwise."""
    return active_adapter(lora_base, role) if lora_base is not None else contextlib.nullcontext()


def optimizer_step(accelerator, optimizer, loss: torch.Tensor, module: torch.nn.Module, lora_base=None, role: str = "", clip: float = 1.0):
    """zero_grad, backward, clip the gradient norm of ``module``, step. With LoRA the backward runs
    in ``role`` and, over several unsharded processes, the adapter's gradients are averaged (DDP's
    rule; FSDP2 reduces sharded gradients itself)."""
    optimizer.zero_grad(set_to_none=True)
    with training_role(lora_base, role):
        accelerator.backward(loss)
    sharded = is_sharded(module)
    if lora_base is not None and accelerator.num_processes > 1 and not sharded:
        average_gradients(list(module.parameters()), accelerator.num_processes)
    if clip and sharded:  # accelerate matches a model by comparing parameter lists with ==, which two models' DTensors refuse
        torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
    elif clip:
        accelerator.clip_grad_norm_(module.parameters(), clip)
    optimizer.step()


def average_gradients(params: list[torch.Tensor], world_size: int) -> None:
    """All-reduce the gradients of ``params`` in one flat buffer and divide by the process count."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= world_size
    for g, new in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(new.view_as(g))


@torch.no_grad()
def update_ema(nets: Networks, student: torch.nn.Module, decay: float) -> None:
    """CD's target: an EMA of the student's weights (of its adapter, with LoRA). Sharded, the EMA
    and the student have the same layout, so each process updates its own shards."""
    if nets.lora_base is not None:
        return update_ema_adapter(nets.lora_base, decay)
    own = dict(student.named_parameters())
    for name, p_ema in nets.ema.named_parameters():
        p = own[name].detach()
        if hasattr(p, "full_tensor") and not hasattr(p_ema, "full_tensor"):  # a sharded student, a whole EMA
            p = p.full_tensor()
        p_ema.lerp_(p.to(p_ema.dtype), 1.0 - decay)


# ----------------------------------------------------------------------------- validation, rollback, the plan


def render_student(
    student_den, pipe, text: torch.Tensor, latent_shape, grid: list, schedule, seed: int, device, decode_batch_size: int = 0
) -> np.ndarray:
    """The student's videos (uint8 [N, T, H, W, 3]) for prompts encoded as ``text`` at fixed seeds."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((len(text), *latent_shape), generator=g).to(device)
    latents = multistep_sample(student_den.conditioned(text), x, grid, schedule, g)
    return postprocess_video(pipe.decode_latents(latents, decode_batch_size), "np")


@torch.no_grad()
def collapse_sentinel(cfg, pipe: DollarPipeline, latents: torch.Tensor, device) -> CollapseSentinel:
    """The collapse sentinel (dollar/sentinel.py) with the statistics of real clips as its reference."""
    real = latents[: max(cfg.validation_prompts, 8)].float().to(device)
    return CollapseSentinel(
        reference=video_health(postprocess_video(pipe.decode_latents(real, cfg.decode_batch_size), "np")),
        static_ratio=cfg.sentinel_static_ratio,
        solid_ratio=cfg.sentinel_solid_ratio,
        noise_ratio=cfg.sentinel_noise_ratio,
        accuracy_drop=cfg.sentinel_accuracy_drop,
    )


@dataclass
class Validation:
    """The student renders the held-out prompts at fixed seeds; the checker scores them (built-in
    world), the reward too; the collapse sentinel checks them; the main process saves four side by side."""

    cfg: object
    pipe: DollarPipeline
    student_den: object
    data: TrainingData
    latent_shape: tuple
    grid: list
    schedule: NoiseSchedule
    reward_fn: object
    sentinel: object
    device: torch.device
    is_main_process: bool

    def __call__(self, iteration: int, train_reward: float | None) -> dict:
        """The record fields (and the sentinel's reasons)."""
        cfg = self.cfg
        val_states = self.data.val_states.float().to(self.device)
        seed = cfg.seed + 12345
        frames = render_student(
            self.student_den, self.pipe, val_states, self.latent_shape, self.grid, self.schedule, seed, self.device, cfg.decode_batch_size
        )
        out = {}
        world_checker = not cfg.data and training_size(self.pipe, cfg) == (world.NUM_FRAMES, world.HEIGHT, world.WIDTH)
        if world_checker:
            acc = checker_accuracy(list(frames), self.data.val_prompts)
            out.update(val_colour=acc["colour"], val_motion=acc["motion"])
        if self.reward_fn is not None:
            out["val_reward"] = float(np.mean(self.reward_fn(frames, self.data.val_prompts)))
        accuracy = (out["val_colour"] + out["val_motion"]) / 2 if world_checker else None
        reasons = self.sentinel.check(frames, accuracy, train_reward) if cfg.sentinel else []
        out.update(val_temporal=self.sentinel.history[-1]["temporal"] if cfg.sentinel else None, sentinel=reasons)
        if self.is_main_process:
            os.makedirs(os.path.join(cfg.output_dir, "validation"), exist_ok=True)
            strip = np.concatenate(list(frames[:4]), axis=2)  # four prompts side by side
            save_video(strip, os.path.join(cfg.output_dir, "validation", f"iteration-{iteration:07d}.mp4"))
        return out


def roll_back(accelerator, ckpt_root: str, iteration: int, opt_g, reasons: list[str]) -> int | None:
    """Reload the newest checkpoint saved while healthy and halve the generator's learning rate;
    returns its iteration (None: there is none)."""
    for folder, info in reversed(complete_checkpoints(ckpt_root, warn=True)):
        if info.get("healthy", True) and info["iteration"] < iteration:
            current = [group["lr"] for group in opt_g.param_groups]  # already lowered by earlier rollbacks
            accelerator.load_state(folder)
            for group, lr in zip(opt_g.param_groups, current):
                group["lr"] = 0.5 * lr
            accelerator.print(f"collapse sentinel: {'; '.join(reasons)}. Rolled back to {os.path.basename(folder)}, generator lr halved.")
            return info["iteration"]
    accelerator.print(f"collapse sentinel: {'; '.join(reasons)}. No healthy checkpoint to roll back to; continuing.")
    return None


def check_memory_plan(cfg, accelerator) -> bool:
    """Print the plan (``--plan``: then return True to stop), or refuse a launch that will not fit
    in one sentence naming the setting that does. Reads only configs."""
    from dollar import memory

    num_gpus = cfg.num_gpus or accelerator.num_processes
    try:
        shape = memory.run_shape(cfg.teacher, cfg.batch_size, cfg.num_frames, cfg.height, cfg.width, cfg.num_clips)
        counts, rows = memory.plan(
            cfg.teacher,
            shape,
            num_gpus,
            cfg.lora_rank or 64,
            cfg.optimizer_8bit,
            cfg.gradient_checkpointing,
            decode_batch_size=cfg.decode_batch_size,
        )
    except ModelLoadError as err:
        raise SystemExit(f"error: {err}") from None
    budget = cfg.gpu_memory_gb * memory.GiB or (torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else 0)
    if cfg.plan:
        accelerator.print(
            f"{counts.transformer_class}: {counts.parameters / 1e9:.2f} B parameters (LoRA rank {cfg.lora_rank or 64}: "
            f"{counts.lora_parameters / 1e6:.1f} M per adapter), text encoder {counts.text_encoder_parameters / 1e9:.2f} B, "
            f"VAE {counts.vae_parameters / 1e6:.0f} M; batch {cfg.batch_size}, {shape.video_tokens} video tokens per clip\n"
            + memory.format_table(rows, budget or None)
        )
        return True
    chosen = memory.Setting(
        "lora" if cfg.lora_rank else "full",
        "fp32" if cfg.weight_dtype == "fp32" else "bf16",
        "fsdp" if str(accelerator.distributed_type).endswith("FSDP") else "ddp",
        num_gpus,
        cfg.optimizer_8bit,
        cfg.gradient_checkpointing,
    )
    need = dict(rows).get(chosen)
    if budget and need and need["total"] > budget:
        fit = memory.first_fit(rows, budget)
        advice = (
            f"use {fit[0].label()} ({fit[1]['total'] / memory.GiB:.1f} GiB)"
            if fit
            else "no setting fits: add GPUs, turn on --gradient_checkpointing or lower --batch_size"
        )
        raise SystemExit(
            f"error: {chosen.label()} needs about {need['total'] / memory.GiB:.1f} GiB per GPU, more than the {budget / memory.GiB:.1f} GiB "
            f"available; {advice} (see --plan)."
        )
    return False


# ----------------------------------------------------------------------------- the result


def save_student(accelerator, cfg, pipe: DollarPipeline, nets: Networks, reward_model, grid: list, record: dict, memory: dict) -> None:
    """The student as a pipeline folder (with LoRA also the adapter alone in ``student_lora/``), the
    latent reward model, and ``distill_config.json`` (the config, ``record``, where the weights came
    from, ``memory``). Every process calls it (sharded weights are gathered by all of them); the
    main process writes."""
    base = nets.lora_base
    if base is not None:
        if is_sharded(base):
            base = unsharded_copy(base, None, lambda plain: add_adapters(plain, cfg.lora_rank, cfg.lora_alpha or None))
        final = merged_student(base).to(torch.float32).eval() if accelerator.is_main_process else None
    else:
        final = unsharded_copy(accelerator.unwrap_model(nets.student))
    if not accelerator.is_main_process:
        return
    if base is not None:
        save_student_adapter(base, os.path.join(cfg.output_dir, "student_lora"))
    num_frames, height, width = training_size(pipe, cfg)
    out = DollarPipeline(
        transformer=final,
        vae=pipe.vae,
        scheduler=pipe.scheduler,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        prediction_type=pipe.config.prediction_type,
        student_timesteps=grid,
        default_guidance_scale=1.0,
        teacher_family=pipe.config.teacher_family,
        text_encoder_source=pipe.config.text_encoder_source,
        max_sequence_length=pipe.config.max_sequence_length,
        default_height=height,
        default_width=width,
        default_num_frames=num_frames,
    )
    out.save_pretrained(cfg.output_dir)
    if cfg.lrm and record["iterations_done"] > 0 and weighted_reward(parse_reward_spec(cfg.reward)) is not None:
        accelerator.unwrap_model(reward_model).save_pretrained(os.path.join(cfg.output_dir, "latent_reward_model"))
    with open(os.path.join(cfg.output_dir, "distill_config.json"), "w") as f:
        json.dump({**asdict(cfg), **record, **provenance(cfg), **memory}, f, indent=2)


def provenance(cfg) -> dict:
    """Where the weights came from when the run started from another student: that student's own
    distill_config.json, so a re-gridded student records the recipe that trained it."""
    if not cfg.init_student:
        return {}
    path = os.path.join(resolve_model(cfg.init_student), "distill_config.json")
    recipe = json.load(open(path)) if os.path.exists(path) else None
    return {"weights_from": {"init_student": cfg.init_student, "distill_config": recipe}}


def peak_memory() -> dict:
    """Peak memory of this process so far: the accelerator's allocator peak on CUDA, and the
    resident-set high-water mark (ru_maxrss) everywhere, in MiB."""
    import resource

    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out
