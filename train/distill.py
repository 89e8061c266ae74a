"""Distil a teacher into a 1-, 2- or 4-step student with DOLLAR (shared/METHOD.md section 3):
variational score distillation + consistency distillation + latent reward model fine-tuning.

    python train/distill.py                                   # bundled teacher -> 4-step student
    python train/distill.py --config train/configs/student-1-onestep.yaml --max_iters 2000
    python train/distill.py --cd false --lrm false            # the VSD-only ablation (DMD)
    accelerate launch --num_processes 2 train/distill.py ...  # several processes (DDP)

One iteration, in order: a generator step on w_vsd L_VSD + w_cd L_CD; ``fake_steps`` updates of
the fake score on the student's samples; one fit of the latent reward model on decoded real and
generated clips; a generator step on -w_r R_lat (or, with ``--reward_method ddpo``, one
REINFORCE step on decoded rewards over the student's own stochastic steps: the baseline).
Batches and noise are functions of the iteration number, so ``--resume latest`` continues
exactly where the last checkpoint left off.

Every ``validate_every`` iterations the student renders the held-out prompts: the videos go to
``<output_dir>/validation/``, the checker accuracy and reward to the trackers (TensorBoard by
default) and the JSONL log, and the collapse sentinel (dollar/sentinel.py) checks them; with
``--rollback`` it reloads the last healthy checkpoint and halves the generator learning rate.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm
from transformers import HfArgumentParser

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dollar import world  # noqa: E402
from dollar.checker import checker_accuracy  # noqa: E402
from dollar.checkpointing import complete_checkpoints, load_checkpoint, open_log, save_checkpoint  # noqa: E402
from dollar.data import VideoFolderDataset, WorldVideoDataset, encode_dataset  # noqa: E402
from dollar.denoiser import x0_only  # noqa: E402
from dollar.lora import AdapterState, AdapterView, active_adapter, add_adapters, merged_student, save_student_adapter, update_ema_adapter  # noqa: E402
from dollar.losses import (  # noqa: E402
    consistency_loss,
    ddpo_loss,
    ddpo_rollout,
    fake_score_loss,
    latent_reward_fit_loss,
    reward_finetune_loss,
    vsd_loss,
)
from dollar.memory import PeakMemory, tensor_bytes  # noqa: E402
from dollar.models import LatentRewardModel, set_attention_backend  # noqa: E402
from dollar.pipeline import DollarPipeline, ModelLoadError, postprocess_video, resolve_model  # noqa: E402
from dollar.rewards import get_reward  # noqa: E402
from dollar.sampling import multistep_sample, student_training_input  # noqa: E402
from dollar.schedule import PREDICTION_TYPES, NoiseSchedule  # noqa: E402
from dollar.sentinel import CollapseSentinel, video_health  # noqa: E402
from dollar.video import save_video  # noqa: E402


@dataclass
class DistillConfig:
    teacher: str = "teacher"  # bundled name, pipeline folder or hub id (ours, or a stock Wan / CogVideoX / LTX-Video folder)
    prediction_type: str = (
        ""  # override the teacher's prediction type read from its scheduler (epsilon, v_prediction, flow, conjugate_velocity)
    )
    height: int = 0  # training clips' size; 0 = the teacher's default (64x64x17 for the bundled one)
    width: int = 0
    num_frames: int = 0
    init_student: str = ""  # start the student from this pipeline's transformer (e.g. a trained 4-step student of the same teacher); with max_iters 0 it is only re-gridded
    output_dir: str = "runs/student-4"
    config: str = ""  # YAML file with any of these fields; command-line flags override it
    num_steps: int = 4  # student steps: 1, 2 or 4 are the paper's grids (the schedule's evenly spaced grid for any n)
    timesteps: str = ""  # a custom grid instead, in the teacher's timesteps, e.g. "999,666,333"
    max_iters: int = 600
    batch_size: int = 16
    num_clips: int = 2000  # real clips for CD and the reward fit (the built-in world)
    data: str = ""  # or a CSV / folder of your clips
    cache_dir: str = ""  # where the encoded clips are cached (default <output_dir>/cache); runs of one teacher can share it
    generator_lr: float = 2e-5
    fake_lr: float = 1e-4
    lrm_lr: float = 1e-3
    vsd: bool = True
    vsd_weight: float = 1.0
    cd: bool = True
    cd_weight: float = 0.5
    lrm: bool = True
    reward_weight: float = 1.0
    fake_steps: int = 5  # fake-score updates per generator update (DMD2's two time-scale rule)
    real_guidance_w: float = 3.5  # CFG w of the real score in VSD (METHOD.md)
    cd_guidance_w: float = 7.5  # CFG w of the teacher inside CD
    cd_skip: int = 5  # m teacher DDIM steps on the 50-step grid
    ema_decay: float = 0.95  # EMA of the student, the CD target network
    reward: str = "motion"  # a name from dollar.rewards (motion = the paper's dynamic degree), or clip:<model>
    reward_method: str = "lrm"  # "lrm" (latent reward model) or "ddpo" (REINFORCE on decoded rewards: the baseline)
    ddpo_sigma: float = 0.1  # DDPO: exploration std of the last (x0) step, in latent units
    lrm_text_conditioned: bool = True
    checkpoint_every: int = 50
    seed: int = 0
    resume: str = ""  # "latest", or a checkpoint folder
    report_to: str = "tensorboard"  # accelerate tracker(s): tensorboard, wandb, ...; "none" = JSONL log only
    validate_every: int = 100  # held-out validation videos + checker accuracy every N iterations (0 = off)
    validation_prompts: int = 16
    sentinel: bool = True  # warn when outputs go static / solid / noisy, or on reward hacking
    rollback: bool = True  # ... and reload the last healthy checkpoint, halving the generator learning rate
    max_rollbacks: int = 3  # then keep going (and keep warning)
    sentinel_static_ratio: float = 0.15  # "static": temporal variation below this share of real clips'
    sentinel_solid_ratio: float = 0.25  # "solid": spatial variation below this share of real clips'
    sentinel_noise_ratio: float = 3.0  # "noise": roughness above this multiple of real clips'
    sentinel_accuracy_drop: float = 0.10  # "reward hacking": held-out checker down this much while the reward rises
    find_unused_parameters: bool = False  # DDP, for teachers with parameters the student path skips
    mixed_precision: str = "no"
    attention_backend: str = "auto"  # auto: xformers on CUDA when installed, else PyTorch SDPA
    gradient_checkpointing: bool = False
    weight_dtype: str = "fp32"  # dtype of the frozen teacher, EMA target and LoRA base: fp32 | bf16 | fp16 (trainable weights stay fp32)
    lora_rank: int = 0  # > 0: distil LoRA adapters (student, fake score, EMA) on one frozen base instead of full copies
    lora_alpha: float = 0.0  # LoRA scale numerator; 0 = the rank
    optimizer_8bit: bool = False  # bitsandbytes' 8-bit AdamW for the student and fake score (CUDA)
    decode_batch_size: int = 2  # clips the VAE decodes at once (reward fit, validation); 0 = all together
    prepare_only: bool = False  # encode the clips and prompts into the cache (--cache_dir) and stop: later runs never load the text encoder
    plan: bool = False  # print the memory plan per GPU (from the teacher's configs, nothing loaded) and stop
    num_gpus: int = 0  # for the plan: GPUs to shard over (0 = this launch's processes)
    gpu_memory_gb: float = 0.0  # per-GPU memory to plan for (0 = the CUDA device's; on CPU no check)
    measure_memory: bool = False  # record the resident weights and the training loop's peak tensor bytes (PyTorch's MemTracker; slow)


def parse_config(argv: list[str] | None = None) -> DistillConfig:
    """Defaults <- YAML file (``--config``) <- command-line flags; then validated."""
    import yaml

    argv = sys.argv[1:] if argv is None else argv
    parser = HfArgumentParser(DistillConfig)
    (cfg,) = parser.parse_args_into_dataclasses(args=argv)
    if cfg.config:
        if not os.path.isfile(cfg.config):
            raise SystemExit(f"error: config file {cfg.config} not found; pass an existing YAML file.")
        with open(cfg.config) as f:
            values = yaml.safe_load(f) or {}
        known = {f.name for f in fields(DistillConfig)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SystemExit(f"error: {cfg.config} has unknown keys {unknown}; see `python train/distill.py --help`.")
        # flags given on the command line win over the file
        # (by the parser's own options: `--no_cd` sets `cd`, `--fake-lr` sets `fake_lr`)
        flags = {a.split("=")[0] for a in argv if a.startswith("--")}
        given = {action.dest for action in parser._actions if flags & set(action.option_strings)}
        for key, value in values.items():
            if key not in given:
                setattr(cfg, key, value)
    validate(cfg)
    return cfg


def student_grid(cfg: DistillConfig, schedule: NoiseSchedule) -> list:
    """The student's timesteps on the teacher's schedule: ``--timesteps``, else the schedule's
    ``num_steps`` grid (VP: 999 / 999, 499 / 999, 749, 499, 249; flow: shifted s = 1, 1 - 1/n, ...)."""
    if cfg.timesteps:
        try:
            return schedule.check_grid(float(t) for t in cfg.timesteps.split(","))
        except ValueError as err:
            raise SystemExit(f"error: --timesteps: {err}.") from None
    return schedule.grid(cfg.num_steps)


def validate(cfg: DistillConfig) -> None:
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
        try:
            get_reward(cfg.reward) if not cfg.reward.startswith("clip:") else None
        except ValueError as err:
            raise SystemExit(f"error: {err}") from None
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


def load_teacher(name: str, prediction_type: str = "", with_text_encoder: bool = True) -> DollarPipeline:
    try:
        pipe = DollarPipeline.from_pretrained(name, prediction_type=prediction_type or None, with_text_encoder=with_text_encoder)
    except ModelLoadError as err:
        raise SystemExit(f"error: {err}") from None
    if pipe.is_student:
        raise SystemExit(f"error: {name} is already a distilled student; give a teacher pipeline.")
    return pipe


def validation_set(cfg: DistillConfig, clips, prompts: list[str]) -> list[str]:
    """Held-out world prompts (never seen in training) for the built-in world; else the first captions."""
    if cfg.data:
        return prompts[: cfg.validation_prompts]
    return [p.prompt for p in world.heldout_prompts(max(cfg.validation_prompts, 1))][: cfg.validation_prompts]


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


def cache_key(pipe, cfg: DistillConfig, val_prompts: list[str]) -> str:
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


def training_size(pipe: DollarPipeline, cfg: DistillConfig) -> tuple[int, int, int]:
    """(num_frames, height, width) of the training clips: the flags, else the teacher's default."""
    h, w, f = pipe.default_size()
    return cfg.num_frames or f, cfg.height or h, cfg.width or w


def render_student(
    student_den, pipe, text: torch.Tensor, latent_shape, grid: list, schedule, seed: int, device, decode_batch_size: int = 0
) -> np.ndarray:
    """The student's videos (uint8 [N, T, H, W, 3]) for prompts encoded as ``text`` at fixed seeds."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((len(text), *latent_shape), generator=g).to(device)
    latents = multistep_sample(student_den.conditioned(text), x, grid, schedule, g)
    return postprocess_video(pipe.decode_latents(latents, decode_batch_size), "np")


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def build_networks(cfg: DistillConfig, pipe: DollarPipeline, device):
    """(teacher, student, fake score, EMA target, LoRA base or None), each on ``device``.

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
        return (*views, base)
    student = copy.deepcopy(base).float().requires_grad_(True).train()
    fake = copy.deepcopy(base).float().requires_grad_(True).train()
    if cfg.gradient_checkpointing:
        student.enable_gradient_checkpointing()
        fake.enable_gradient_checkpointing()
    ema = cast_frozen(copy.deepcopy(base), DTYPES[cfg.weight_dtype]).requires_grad_(False).eval()
    teacher = cast_frozen(base, DTYPES[cfg.weight_dtype]).requires_grad_(False).eval()
    return teacher, student, fake, ema, None


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


def optimizer_class(cfg: DistillConfig):
    """AdamW, or bitsandbytes' 8-bit AdamW (CUDA) with --optimizer_8bit."""
    if not cfg.optimizer_8bit:
        return torch.optim.AdamW
    try:
        import bitsandbytes
    except ImportError:
        raise SystemExit("error: --optimizer_8bit needs bitsandbytes on a CUDA machine (pip install bitsandbytes).") from None
    return bitsandbytes.optim.AdamW8bit


@torch.no_grad()
def update_ema(ema: torch.nn.Module, student: torch.nn.Module, lora_base, decay: float) -> None:
    """CD's target: an EMA of the student's weights (of its adapter, with LoRA)."""
    if lora_base is not None:
        return update_ema_adapter(lora_base, decay)
    for p_ema, p in zip(ema.parameters(), student.parameters()):
        p = p.full_tensor() if hasattr(p, "full_tensor") else p  # FSDP2 shards are DTensors
        p_ema.lerp_(p.detach().to(p_ema.dtype), 1.0 - decay)


def training_role(lora_base, role: str):
    """With LoRA, backward runs with the trained adapter active (gradient checkpointing recomputes
    the forward then); a no-op otherwise."""
    return active_adapter(lora_base, role) if lora_base is not None else contextlib.nullcontext()


def check_memory_plan(cfg: DistillConfig, accelerator) -> bool:
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


def student_input(denoise, grid: list, schedule: NoiseSchedule, shape, generator, device) -> tuple[torch.Tensor, int]:
    """A random student step and the input the student sees there (fresh noise, earlier steps
    simulated without gradients)."""
    noise = torch.randn(shape, generator=generator).to(device)
    step = int(torch.randint(0, len(grid), (1,), generator=generator))
    return student_training_input(denoise, noise, grid, schedule, step, generator), step


def scaled_policy(denoise, scales: dict):
    """DDPO's policy mean at a recorded step: the step's scale times the student's x0_hat."""
    return lambda x, t: scales[float(t[0])] * denoise(x, t)[0]


def main(cfg: DistillConfig) -> dict:
    trackers = None if cfg.report_to in ("", "none") else cfg.report_to.split(",")
    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision,
        log_with=trackers,
        project_dir=cfg.output_dir,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=cfg.find_unused_parameters)],
    )
    set_seed(cfg.seed)
    if cfg.plan or cfg.gpu_memory_gb or torch.cuda.is_available():
        if check_memory_plan(cfg, accelerator):
            return {"iterations": 0, "history": [], "rollbacks": 0}
    cache_path = os.path.join(cfg.cache_dir or os.path.join(cfg.output_dir, "cache"), "data.safetensors")
    pipe = load_teacher(cfg.teacher, cfg.prediction_type, with_text_encoder=not os.path.exists(cache_path))
    num_frames, height, width = training_size(pipe, cfg)
    try:
        pipe.check_inputs("", 1, 1.0, num_frames, height, width, "np")
    except ValueError as err:
        raise SystemExit(f"error: {err} Pass --height, --width and --num_frames that fit the teacher.") from None
    latent_shape = pipe.latent_shape(num_frames, height, width)
    schedule = pipe.noise_schedule(latent_shape)
    grid = student_grid(cfg, schedule)
    device = accelerator.device
    if cfg.lora_rank and accelerator.num_processes > 1:
        raise SystemExit("error: LoRA distillation runs in one process for now; drop --lora_rank or launch a single process.")
    attention_backend = set_attention_backend(pipe.transformer, cfg.attention_backend)
    accelerator.print(f"attention backend: {attention_backend}")
    pipe.vae.to(device)
    pt = pipe.config.prediction_type
    accelerator.print(f"teacher: {pipe.family.label}, {pt} on a {schedule.kind} schedule; student grid {grid}")

    # Real data, encoded once and cached (next to the output unless --cache_dir names a shared folder).
    size = dict(num_frames=num_frames, height=height, width=width)
    clips = VideoFolderDataset(cfg.data, **size) if cfg.data else WorldVideoDataset(cfg.num_clips, seed=1_000_000, **size)
    prompts = [clips.captions(i, 1)[0] for i in range(len(clips))]
    val_prompts = validation_set(cfg, clips, prompts)
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
        cache = encode_dataset(pipe.vae, pipe.encode_text, clips, 1, progress=accelerator.is_main_process)
        cache["val_states"] = pipe.encode_text(val_prompts).float().cpu().half()
        if accelerator.is_main_process:
            os.makedirs(os.path.dirname(cache_path), exist_ok=True)
            save_file(cache, cache_path + ".tmp", metadata={"key": key})
            os.replace(cache_path + ".tmp", cache_path)
    latents, text_states, null_states = cache["latents"], cache["text_states"][:, 0], cache["null_states"]
    pipe.register_modules(text_encoder=None, tokenizer=None)  # prompts are encoded: the text encoder is not resident while training
    if cfg.prepare_only:
        accelerator.print(f"encoded {len(latents)} clips and {len(val_prompts)} validation prompts into {cache_path}")
        return {"iterations": 0, "history": [], "rollbacks": 0, "cache": cache_path}

    teacher, student, fake, ema_student, lora_base = build_networks(cfg, pipe, device)
    if cfg.init_student:
        start_weights = load_student_init(cfg.init_student, pipe.transformer)
        student.load_state_dict(start_weights)
        ema_student.load_state_dict(start_weights)
        accelerator.print(f"student initialised from {cfg.init_student}")

    _, c, _, h, _ = latents.shape
    stride = 2 if h <= 16 else 4
    reward_model = LatentRewardModel(
        latent_channels=c, first_kernel=stride, first_stride=stride, text_dim=text_states.shape[-1] if cfg.lrm_text_conditioned else 0
    )
    reward_fn = get_reward(cfg.reward) if cfg.lrm or cfg.validate_every else None

    adamw = optimizer_class(cfg)
    opt_g = adamw(student.parameters(), lr=cfg.generator_lr, weight_decay=0.0)
    opt_f = adamw(fake.parameters(), lr=cfg.fake_lr, weight_decay=0.0)
    opt_r = torch.optim.AdamW(reward_model.parameters(), lr=cfg.lrm_lr)
    if lora_base is None:
        student, fake, reward_model, opt_g, opt_f, opt_r = accelerator.prepare(student, fake, reward_model, opt_g, opt_f, opt_r)
        accelerator.register_for_checkpointing(ema_student)
    else:  # the adapters share one frozen base: only they are trained and checkpointed
        reward_model, opt_g, opt_f, opt_r = accelerator.prepare(reward_model, opt_g, opt_f, opt_r)
        accelerator.register_for_checkpointing(AdapterState(lora_base))

    teacher_den, student_den, fake_den, ema_den = (pipe.make_denoiser(m, latent_shape) for m in (teacher, student, fake, ema_student))
    cd_grid = schedule.grid(50)  # the teacher's 50-step grid; CD takes cd_skip steps on it

    # Validation and the collapse sentinel: held-out prompts at fixed seeds, real-clip statistics.
    val_states = cache["val_states"].float().to(device)

    with torch.no_grad():
        real_frames = postprocess_video(
            pipe.decode_latents(latents[: max(cfg.validation_prompts, 8)].float().to(device), cfg.decode_batch_size), "np"
        )
    sentinel = CollapseSentinel(
        reference=video_health(real_frames),
        static_ratio=cfg.sentinel_static_ratio,
        solid_ratio=cfg.sentinel_solid_ratio,
        noise_ratio=cfg.sentinel_noise_ratio,
        accuracy_drop=cfg.sentinel_accuracy_drop,
    )

    ckpt_root = os.path.join(cfg.output_dir, "checkpoints")
    world_checker = not cfg.data and (num_frames, height, width) == (world.NUM_FRAMES, world.HEIGHT, world.WIDTH)
    it = 0
    if cfg.resume:
        try:  # 'latest' skips an incomplete checkpoint (a run killed while saving) with a warning
            saved = load_checkpoint(accelerator, cfg.resume, ckpt_root)
        except ValueError as err:
            raise SystemExit(f"error: {err}") from None
        if saved:
            it = saved["iteration"]
            sentinel.load_state_dict(saved.get("sentinel", {}))
            accelerator.print(f"resumed at iteration {it}")
    os.makedirs(cfg.output_dir, exist_ok=True)
    log = open_log(os.path.join(cfg.output_dir, "train_log.jsonl"), it)
    if trackers:
        accelerator.init_trackers("distill", config={k: v for k, v in asdict(cfg).items() if isinstance(v, (int, float, str, bool))})
    healthy = True  # the verdict of the latest validation; stored with each checkpoint
    rollbacks = 0
    last_train_reward = None

    def validate_now(iteration: int) -> dict:
        """Render, score, save, check. Returns the record fields (and the sentinel's reasons)."""
        frames = render_student(
            student_den, pipe, val_states, latents.shape[1:], grid, schedule, cfg.seed + 12345, device, cfg.decode_batch_size
        )
        out = {}
        if world_checker:
            acc = checker_accuracy(list(frames), val_prompts)
            out.update(val_colour=acc["colour"], val_motion=acc["motion"])
        if reward_fn is not None:
            out["val_reward"] = float(np.mean(reward_fn(frames, val_prompts)))
        accuracy = (out["val_colour"] + out["val_motion"]) / 2 if world_checker else None
        reasons = sentinel.check(frames, accuracy, last_train_reward) if cfg.sentinel else []
        out.update(val_temporal=sentinel.history[-1]["temporal"] if cfg.sentinel else None, sentinel=reasons)
        if accelerator.is_main_process:
            os.makedirs(os.path.join(cfg.output_dir, "validation"), exist_ok=True)
            strip = np.concatenate(list(frames[:4]), axis=2)  # four prompts side by side
            save_video(strip, os.path.join(cfg.output_dir, "validation", f"iteration-{iteration:07d}.mp4"))
        return out

    def roll_back(reasons: list[str]) -> int | None:
        """Reload the newest checkpoint saved while healthy; returns its iteration (None: none)."""
        for folder, info in reversed(complete_checkpoints(ckpt_root, warn=True)):
            if info.get("healthy", True) and info["iteration"] < it:
                current = [group["lr"] for group in opt_g.param_groups]  # already lowered by earlier rollbacks
                accelerator.load_state(folder)
                for group, lr in zip(opt_g.param_groups, current):
                    group["lr"] = 0.5 * lr
                accelerator.print(
                    f"collapse sentinel: {'; '.join(reasons)}. Rolled back to {os.path.basename(folder)}, generator lr halved."
                )
                return info["iteration"]
        accelerator.print(f"collapse sentinel: {'; '.join(reasons)}. No healthy checkpoint to roll back to; continuing.")
        return None

    if cfg.validate_every and it == 0:
        first = validate_now(0)
        accelerator.print(f"validation before training: {first}")
        if accelerator.is_main_process:
            log.write(json.dumps({"iteration": 0, **first}) + "\n")
    bar = tqdm(total=cfg.max_iters, initial=it, disable=not accelerator.is_main_process)
    history = []
    start_time = time.time()
    memory = PeakMemory() if cfg.measure_memory else contextlib.nullcontext()
    memory.__enter__()
    while it < cfg.max_iters:
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + it * 7919 + accelerator.process_index)
        idx = torch.randint(0, len(latents), (cfg.batch_size,), generator=g)
        text = text_states[idx].float().to(device)
        null = null_states.float().expand_as(text).to(device)
        x0_real = latents[idx].float().to(device)
        student_cond = student_den.conditioned(text)
        x_in, step = student_input(student_cond, grid, schedule, x0_real.shape, g, device)
        t_step = torch.full((cfg.batch_size,), grid[step], device=device)
        record = {"iteration": it + 1, "student_step": step}

        # 1. Generator: VSD + CD.
        x_gen = student_den(x_in, t_step, text)[0]
        loss_g = torch.zeros((), device=device)
        if cfg.vsd and cfg.vsd_weight > 0:
            real = x0_only(teacher_den.conditioned(text, null, cfg.real_guidance_w))
            loss_vsd = vsd_loss(x_gen, real, x0_only(fake_den.conditioned(text)), schedule, generator=g)
            loss_g = loss_g + cfg.vsd_weight * loss_vsd
            record["loss_vsd"] = loss_vsd.item()
        if cfg.cd and cfg.cd_weight > 0:
            teacher_cd = teacher_den.conditioned(text, null, cfg.cd_guidance_w)
            loss_cd = consistency_loss(
                x0_only(student_cond),
                x0_only(ema_den.conditioned(text)),
                teacher_cd,
                x0_real,
                schedule,
                cd_grid,
                m=cfg.cd_skip,
                generator=g,
            )
            loss_g = loss_g + cfg.cd_weight * loss_cd
            record["loss_cd"] = loss_cd.item()
        if loss_g.requires_grad:
            opt_g.zero_grad(set_to_none=True)
            with training_role(lora_base, "student"):
                accelerator.backward(loss_g)
            accelerator.clip_grad_norm_(student.parameters(), 1.0)
            opt_g.step()
        update_ema(ema_student, accelerator.unwrap_model(student), lora_base, cfg.ema_decay)

        # 2. Fake score on the student's samples: fresh samples (and prompts) for every update, as DMD2.
        x_fake_data = x_gen.detach()
        if cfg.vsd:
            for _ in range(cfg.fake_steps):
                fresh_idx = torch.randint(0, len(latents), (cfg.batch_size,), generator=g)
                fresh_text = text_states[fresh_idx].float().to(device)
                with torch.no_grad():
                    fresh_cond = student_den.conditioned(fresh_text)
                    x_fresh, fresh_step = student_input(fresh_cond, grid, schedule, x0_real.shape, g, device)
                    fresh = fresh_cond(x_fresh, grid[fresh_step])[0]
                loss_f = fake_score_loss(fake_den, fresh, fresh_text, generator=g)
                opt_f.zero_grad(set_to_none=True)
                with training_role(lora_base, "fake"):
                    accelerator.backward(loss_f)
                accelerator.clip_grad_norm_(fake.parameters(), 1.0)
                opt_f.step()
            record["loss_fake"] = loss_f.item() if cfg.fake_steps else None

        # 3. Latent reward model: fit on decoded real and generated clips; 4. climb it.
        batch_prompts = [prompts[i] for i in idx.tolist()]
        if cfg.lrm and cfg.reward_weight > 0 and cfg.reward_method == "ddpo":
            # REINFORCE over the student's own steps: re-noising is the policy's Gaussian, the
            # last step explores around x0_hat with std ddpo_sigma; rewards on decoded pixels.
            with torch.no_grad():
                noise = torch.randn(x0_real.shape, generator=g).to(device)
                trajectory, scales, x = ddpo_rollout(x0_only(student_cond), noise, grid, schedule, cfg.ddpo_sigma, g)
                frames = postprocess_video(pipe.decode_latents(x, cfg.decode_batch_size), "np")
                rewards = torch.as_tensor(reward_fn(frames, batch_prompts), dtype=torch.float32, device=device)
                advantages = (rewards - rewards.mean()) / (rewards.std() + 1e-6) if cfg.batch_size > 1 else rewards * 0
            loss_pg = ddpo_loss(scaled_policy(student_cond, scales), trajectory, advantages)
            opt_g.zero_grad(set_to_none=True)
            with training_role(lora_base, "student"):
                accelerator.backward(cfg.reward_weight * loss_pg)
            accelerator.clip_grad_norm_(student.parameters(), 1.0)
            opt_g.step()
            last_train_reward = rewards.mean().item()
            record.update(loss_ddpo=loss_pg.item(), reward_generated=last_train_reward)
        elif cfg.lrm and cfg.reward_weight > 0:
            both = torch.cat([x_fake_data, x0_real])
            with torch.no_grad():
                frames = postprocess_video(pipe.decode_latents(both, cfg.decode_batch_size), "np")
            rewards = torch.as_tensor(reward_fn(frames, batch_prompts * 2), dtype=torch.float32, device=device)
            both_text = torch.cat([text, text]) if cfg.lrm_text_conditioned else None
            loss_fit = latent_reward_fit_loss(reward_model, both, rewards, both_text)
            opt_r.zero_grad(set_to_none=True)
            accelerator.backward(loss_fit)
            opt_r.step()
            x_gen = student_den(x_in, t_step, text)[0]
            loss_ft = reward_finetune_loss(reward_model, x_gen, text if cfg.lrm_text_conditioned else None)
            opt_g.zero_grad(set_to_none=True)
            with training_role(lora_base, "student"):
                accelerator.backward(cfg.reward_weight * loss_ft)
            accelerator.clip_grad_norm_(student.parameters(), 1.0)
            opt_g.step()
            opt_r.zero_grad(set_to_none=True)  # the reward model is not trained by L_FT
            last_train_reward = rewards[: cfg.batch_size].mean().item()
            record.update(
                loss_lrm_fit=loss_fit.item(),
                reward_generated=rewards[: cfg.batch_size].mean().item(),
                reward_real=rewards[cfg.batch_size :].mean().item(),
                loss_ft=loss_ft.item(),
            )

        it += 1
        record["lr_generator"] = opt_g.param_groups[0]["lr"]
        rolled_back_to = None
        if cfg.validate_every and it % cfg.validate_every == 0:
            record.update(validate_now(it))
            healthy = not record["sentinel"]
            if not healthy:
                accelerator.print(f"collapse sentinel at iteration {it}: {'; '.join(record['sentinel'])}")
                if cfg.rollback and rollbacks < cfg.max_rollbacks:
                    rolled_back_to = roll_back(record["sentinel"])
                    rollbacks += rolled_back_to is not None
                    record["rolled_back_to"] = rolled_back_to
        history.append(record)
        bar.update(1)
        if accelerator.is_main_process:
            log.write(json.dumps(record) + "\n")
            log.flush()
        accelerator.log({k: v for k, v in record.items() if isinstance(v, (int, float)) and v is not None}, step=it)
        if rolled_back_to is not None:
            it = rolled_back_to
            bar.n = it
            healthy = True
            continue
        if it % cfg.checkpoint_every == 0 or it == cfg.max_iters:
            info = {"iteration": it, "healthy": healthy, "sentinel": sentinel.state_dict()}
            save_checkpoint(accelerator, os.path.join(ckpt_root, f"iteration-{it:07d}"), info)  # atomic: written aside, then renamed
    memory.__exit__(None, None, None)
    bar.close()
    accelerator.end_training()
    if cfg.measure_memory:
        resident = tensor_bytes(
            *(m for m in (teacher, student, fake, ema_student, reward_model, pipe.vae, pipe.text_encoder) if m is not None)
        )
        memory_record = {
            "resident_tensor_bytes": resident,
            "loop_peak_tensor_bytes": memory.peak,
            "data_tensor_bytes": latents.nbytes + text_states.nbytes,
        }
        accelerator.print(f"memory: {resident / 2**20:.1f} MiB resident, training-loop peak {memory.peak / 2**20:.1f} MiB above it")
    else:
        memory_record = {}

    if accelerator.is_main_process:
        if lora_base is not None:
            final = merged_student(lora_base).to(torch.float32).eval()
            save_student_adapter(lora_base, os.path.join(cfg.output_dir, "student_lora"))
        else:
            final = copy.deepcopy(accelerator.unwrap_model(student)).to(torch.float32).eval()
        out = DollarPipeline(
            transformer=final,
            vae=pipe.vae,
            scheduler=pipe.scheduler,
            text_encoder=pipe.text_encoder,
            tokenizer=pipe.tokenizer,
            prediction_type=pt,
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
        if cfg.lrm and it > 0:
            accelerator.unwrap_model(reward_model).save_pretrained(os.path.join(cfg.output_dir, "latent_reward_model"))
        with open(os.path.join(cfg.output_dir, "distill_config.json"), "w") as f:
            stats = {"iterations_done": it, "rollbacks": rollbacks, "seconds": time.time() - start_time, **peak_memory()}
            json.dump({**asdict(cfg), **stats, **provenance(cfg), **memory_record}, f, indent=2)
        accelerator.print(f"saved the {len(grid)}-step student to {cfg.output_dir} ({time.time() - start_time:.0f} s)")
    return {
        "iterations": it,
        "history": history,
        "rollbacks": rollbacks,
        "student": accelerator.unwrap_model(student),
        "teacher": teacher,
        "ema": ema_student,
        "lora_base": lora_base,
        "memory": memory_record,
        "attention_backend": attention_backend,
    }


def provenance(cfg: DistillConfig) -> dict:
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


if __name__ == "__main__":
    main(parse_config())
