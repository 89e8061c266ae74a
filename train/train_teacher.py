"""Train the latent video teacher (WanTransformer3DModel with absolute positions, small config) with the
conjugate-velocity loss on the 1000-step DDPM schedule and ~10% prompt dropout for CFG.

    python train/train_teacher.py --vae assets/vae --output_dir assets/teacher
    accelerate launch train/train_teacher.py ...        # several GPUs; --mixed_precision bf16
    python train/train_teacher.py --config teacher.yaml --max_steps 300   # fields from a YAML file; flags win over it

Reads top to bottom: encode the data once (VAE latents + MiniLM token states, cached as
safetensors), build, loop, log, save. ``--resume latest`` continues from the newest complete checkpoint. A stop at
``--time_limit_minutes`` also writes the pipeline (EMA weights so far), and ``--export_only`` writes
it from the last checkpoint of a run that was killed, so any checkpoint can be evaluated.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers import DDIMScheduler
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dollar import world  # noqa: E402
from dollar.checkpointing import end_step, resume_or_exit, start_log, warmup_cosine  # noqa: E402
from dollar.config import TrainerRunConfig, parse_config  # noqa: E402
from dollar.data import VideoFolderDataset, WorldVideoDataset, encode_dataset  # noqa: E402
from dollar.distill_setup import optimizer_step  # noqa: E402
from dollar.losses import conjugate_velocity_loss  # noqa: E402
from dollar.models import TINY_TEACHER_CONFIG, CausalVideoAutoencoder, DollarWanTransformer3DModel, set_attention_backend  # noqa: E402
from dollar.pipeline import DollarPipeline  # noqa: E402
from dollar.schedule import DDIM_SCHEDULER_CONFIG, ddpm_alphas_cumprod  # noqa: E402
from dollar.text import encode_prompts, load_text_encoder  # noqa: E402


@dataclass
class TeacherTrainConfig(TrainerRunConfig):
    output_dir: str = "assets/teacher"
    config: str = ""  # YAML file with any of these fields; command-line flags override it
    vae: str = "assets/vae"
    data: str = ""  # a CSV (video_path,caption) or folder of clips; empty = the procedural world
    num_clips: int = 6000
    captions_per_clip: int = 2
    two_object_fraction: float = 0.0  # world clips with two objects (the rest have one)
    vocabulary: str = "world"  # world captions: "world" (its own phrasings) or "rich" (also training synonyms)
    cache_dir: str = ""  # default: <output_dir>/cache
    max_steps: int = 1500
    batch_size: int = 64
    learning_rate: float = 4e-4
    warmup_steps: int = 100
    ema_decay: float = 0.998
    prompt_dropout: float = 0.1
    default_guidance_scale: float = 4.5
    attention_backend: str = "auto"  # auto: xformers on CUDA when installed, else PyTorch SDPA
    gradient_checkpointing: bool = False
    save_fp16: bool = True
    model_config: str = ""  # JSON file with DollarWanTransformer3DModel kwargs; empty = the tiny default
    init_from: str = ""  # start from this teacher (pipeline folder or bundled name); its architecture wins, its latent/text geometry adapts
    export_only: bool = False  # write the pipeline (EMA weights) from the last checkpoint and stop, no training


def build_cache(cfg: TeacherTrainConfig, vae, accelerator) -> dict[str, torch.Tensor]:
    """Encode every clip once (normalized latents, token states per caption), cached on disk."""
    cache_dir = cfg.cache_dir or os.path.join(cfg.output_dir, "cache")
    # The name says what was encoded, so a run with other data settings never reads a stale cache.
    what = "" if cfg.data else f"-{cfg.num_clips}x{cfg.captions_per_clip}-two{cfg.two_object_fraction:g}-{cfg.vocabulary}"
    path = os.path.join(cache_dir, f"latents{what}.safetensors")
    if os.path.exists(path):
        return load_file(path)
    tokenizer, text_encoder = load_text_encoder()
    if cfg.data:
        clips, captions_per_clip = VideoFolderDataset(cfg.data), 1
    else:
        clips = WorldVideoDataset(cfg.num_clips, seed=0, two_object_fraction=cfg.two_object_fraction, vocabulary=cfg.vocabulary)
        captions_per_clip = cfg.captions_per_clip
    cache = encode_dataset(
        vae,
        lambda prompts: encode_prompts(tokenizer, text_encoder, prompts),
        clips,
        captions_per_clip,
        progress=accelerator.is_main_process,
    )
    if accelerator.is_main_process:
        os.makedirs(cache_dir, exist_ok=True)
        save_file(cache, path)
    return cache


def load_initial_transformer(name_or_path: str) -> DollarWanTransformer3DModel:
    """The transformer of a saved teacher, in fp32. A stock Wan checkpoint gains the (zero-initialised)
    absolute positions, so fine-tuning starts from exactly the model it loaded."""
    from diffusers import WanTransformer3DModel

    from dollar.pipeline import resolve_model

    sub = os.path.join(resolve_model(name_or_path), "transformer")
    if not os.path.exists(os.path.join(sub, "config.json")):
        raise SystemExit(f"{name_or_path} has no transformer/config.json; pass a saved teacher pipeline folder to --init_from.")
    config = json.load(open(os.path.join(sub, "config.json")))
    cls = DollarWanTransformer3DModel if config.get("_class_name") == "DollarWanTransformer3DModel" else WanTransformer3DModel
    transformer = cls.from_pretrained(sub, torch_dtype=torch.float32)
    if not isinstance(transformer, DollarWanTransformer3DModel):
        transformer = DollarWanTransformer3DModel.from_wan(transformer)
    return transformer.float().train()


TOKEN_GRID = 4  # tokens per side of a latent frame: 5 latent frames x 4 x 4 = 80 tokens per clip


def default_patch_size(height: int, width: int) -> tuple[int, int, int]:
    """Spatial patches that give the default teacher a ``TOKEN_GRID`` x ``TOKEN_GRID`` token grid
    whatever the VAE's compression (8x8 latents: 2x2 patches; 4x compression's 16x16: 4x4), so
    a latent space with more spatial detail costs the transformer nothing more."""
    return (1, max(1, height // TOKEN_GRID), max(1, width // TOKEN_GRID))


def adapt_to_latents(transformer: DollarWanTransformer3DModel, model_kwargs: dict, log=print) -> DollarWanTransformer3DModel:
    """``transformer`` if it fits these latents and text; else the same architecture with the
    latent / text geometry of ``model_kwargs`` (a new VAE: other channels or patches), every
    weight whose shape still fits copied over and the rest (patch embedding, output projection)
    freshly initialised: the blocks keep what they learnt of text, layout and motion."""
    keys = ("in_channels", "out_channels", "text_dim", "patch_size")
    wanted = {k: tuple(v) if k == "patch_size" else v for k, v in model_kwargs.items() if k in keys}
    have = {k: tuple(transformer.config[k]) if k == "patch_size" else transformer.config[k] for k in keys}
    if wanted == have:
        return transformer
    config = {k: v for k, v in transformer.config.items() if not k.startswith("_")}
    fresh = DollarWanTransformer3DModel(**{**config, **wanted})
    old = transformer.state_dict()
    state = fresh.state_dict()
    kept = {k: v for k, v in old.items() if k in state and v.shape == state[k].shape}
    fresh.load_state_dict({**state, **kept})
    log(
        f"new latent geometry {wanted} (was {have}): kept {len(kept)} of {len(state)} tensors, initialised {sorted(set(state) - set(kept))}"
    )
    return fresh.float().train()


def main(cfg: TeacherTrainConfig) -> dict:
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision)
    set_seed(cfg.seed)
    if not os.path.isfile(os.path.join(cfg.vae, "config.json")):
        raise SystemExit(f"VAE folder {cfg.vae} not found (no config.json there); train one with train/train_vae.py or pass --vae.")
    if cfg.vocabulary not in world.VOCABULARIES or not 0.0 <= cfg.two_object_fraction <= 1.0:
        raise SystemExit(f"--vocabulary must be one of {world.VOCABULARIES} and --two_object_fraction between 0 and 1.")
    vae = CausalVideoAutoencoder.from_pretrained(cfg.vae).eval()
    cache = build_cache(cfg, vae, accelerator)
    latents, text_states, null_states = cache["latents"], cache["text_states"], cache["null_states"]
    n, k_per_clip = latents.shape[0], text_states.shape[1]

    model_kwargs = json.load(open(cfg.model_config)) if cfg.model_config else dict(TINY_TEACHER_CONFIG)
    model_kwargs.update(in_channels=latents.shape[1], out_channels=latents.shape[1], text_dim=text_states.shape[-1])
    if not cfg.model_config:
        model_kwargs["patch_size"] = default_patch_size(latents.shape[-2], latents.shape[-1])
    if cfg.init_from:
        transformer = load_initial_transformer(cfg.init_from)
        accelerator.print(f"starting from the transformer of {cfg.init_from}")
        transformer = adapt_to_latents(transformer, model_kwargs, accelerator.print)
    else:
        transformer = DollarWanTransformer3DModel(**model_kwargs)
    accelerator.print(f"attention backend: {set_attention_backend(transformer, cfg.attention_backend)}")
    if cfg.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    ema = EMAModel(transformer.parameters(), decay=cfg.ema_decay)
    optimizer = torch.optim.AdamW(transformer.parameters(), lr=cfg.learning_rate, weight_decay=0.01)
    schedule = warmup_cosine(optimizer, cfg.warmup_steps, cfg.max_steps, floor=0.1)
    transformer, optimizer, schedule = accelerator.prepare(transformer, optimizer, schedule)
    accelerator.register_for_checkpointing(ema)
    alphas = ddpm_alphas_cumprod().float().to(accelerator.device)

    ckpt_root = os.path.join(cfg.output_dir, "checkpoints")
    step = 0
    saved = resume_or_exit(accelerator, "latest" if cfg.export_only and not cfg.resume else cfg.resume, ckpt_root)
    step = saved["step"] if saved else 0
    if cfg.export_only:
        if step == 0:
            raise SystemExit(
                f"--export_only: no checkpoint in {ckpt_root}; train first (checkpoints are written every --checkpoint_every steps)."
            )
        save_pipeline(cfg, accelerator, transformer, ema, vae, step)
        return {"step": step, "losses": []}
    log, start, bar = start_log(accelerator, cfg.output_dir, step, cfg.max_steps)
    losses = []
    while step < cfg.max_steps:
        # Batches are a function of the step, so a resumed run sees the same data.
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        idx = torch.randint(0, n, (cfg.batch_size,), generator=g)
        cap = torch.randint(0, k_per_clip, (cfg.batch_size,), generator=g)
        x0 = latents[idx].float().to(accelerator.device)
        text = text_states[idx, cap].float()
        drop = torch.rand(cfg.batch_size, generator=g) < cfg.prompt_dropout
        text[drop] = null_states.float()
        loss = conjugate_velocity_loss(transformer, x0, text.to(accelerator.device), alphas, generator=g)
        optimizer_step(accelerator, optimizer, loss, transformer)
        schedule.step()
        ema.step(accelerator.unwrap_model(transformer).parameters())
        step += 1
        losses.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        record = {"step": step, "loss": loss.item(), "lr": schedule.get_last_lr()[0]}
        if end_step(accelerator, cfg, log, record, ckpt_root, step, cfg.max_steps, start):
            save_pipeline(cfg, accelerator, transformer, ema, vae, step)
            return {"step": step, "losses": losses}
    bar.close()

    save_pipeline(cfg, accelerator, transformer, ema, vae, step)
    return {"step": step, "losses": losses}


def save_pipeline(cfg: TeacherTrainConfig, accelerator, transformer, ema, vae, step: int) -> None:
    """Write a loadable teacher pipeline to ``cfg.output_dir`` holding the EMA weights at ``step``
    (the training weights are left as they were, so a run can go on after an export)."""
    if not accelerator.is_main_process:
        return
    model = accelerator.unwrap_model(transformer)
    final = copy.deepcopy(model)
    ema.copy_to(final.parameters())
    if cfg.save_fp16:
        final = final.to(torch.float16)
    tokenizer, text_encoder = load_text_encoder()
    pipe = DollarPipeline(
        transformer=final,
        vae=copy.deepcopy(vae).to(torch.float16) if cfg.save_fp16 else vae,
        scheduler=DDIMScheduler(**DDIM_SCHEDULER_CONFIG),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        default_guidance_scale=cfg.default_guidance_scale,
    )
    pipe.save_pretrained(cfg.output_dir)
    accelerator.print(f"saved the teacher pipeline (EMA weights at step {step}) to {cfg.output_dir}")


if __name__ == "__main__":
    main(parse_config(TeacherTrainConfig))
