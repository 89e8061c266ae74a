"""Distil a teacher into a 1-, 2- or 4-step student with DOLLAR (shared/METHOD.md section 3):
variational score distillation + consistency distillation + latent reward model fine-tuning.

    python train/distill.py                                   # bundled teacher -> 4-step student
    python train/distill.py --config train/configs/student-1.yaml --max_iters 2000
    python train/distill.py --cd false --lrm false            # the VSD-only ablation (DMD)
    accelerate launch --num_processes 2 train/distill.py ...  # several processes (DDP)

One iteration, in order: a generator step on w_vsd L_VSD + w_cd L_CD; ``fake_steps`` updates of
the fake score on the student's samples; one fit of the latent reward model on decoded real and
generated clips; a generator step on -w_r R_lat. Batches and noise are functions of the
iteration number, so ``--resume latest`` continues exactly where the last checkpoint left off.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from dataclasses import dataclass, fields

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import HfArgumentParser

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dollar.checkpointing import open_log  # noqa: E402
from dollar.data import VideoFolderDataset, WorldVideoDataset, encode_dataset  # noqa: E402
from dollar.denoiser import Denoiser  # noqa: E402
from dollar.losses import (  # noqa: E402
    consistency_loss,
    fake_score_loss,
    latent_reward_fit_loss,
    reward_finetune_loss,
    vsd_loss,
)
from dollar.models import LatentRewardModel, set_attention_backend  # noqa: E402
from dollar.pipeline import DollarPipeline, ModelLoadError, postprocess_video  # noqa: E402
from dollar.rewards import get_reward  # noqa: E402
from dollar.sampling import student_training_input  # noqa: E402
from dollar.schedule import STUDENT_TIMESTEPS, trailing_timesteps  # noqa: E402


@dataclass
class DistillConfig:
    teacher: str = "teacher"  # bundled name, pipeline folder or hub id
    output_dir: str = "runs/student-4"
    config: str = ""  # YAML file with any of these fields; command-line flags override it
    num_steps: int = 4  # student steps: 1, 2 or 4 (the paper's grids)
    timesteps: str = ""  # a custom grid instead, e.g. "999,666,333"
    max_iters: int = 600
    batch_size: int = 16
    num_clips: int = 2000  # real clips for CD and the reward fit (the built-in world)
    data: str = ""  # or a CSV / folder of your clips
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
    reward: str = "alignment"  # a name from dollar.rewards, or clip:<model>
    lrm_text_conditioned: bool = True
    checkpoint_every: int = 50
    seed: int = 0
    resume: str = ""  # "latest", or a checkpoint folder
    mixed_precision: str = "no"
    attention_backend: str = "auto"  # auto: xformers on CUDA when installed, else PyTorch SDPA
    gradient_checkpointing: bool = False


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
        given = {a.lstrip("-").split("=")[0].replace("-", "_") for a in argv if a.startswith("--")}
        for key, value in values.items():
            if key not in given:
                setattr(cfg, key, value)
    validate(cfg)
    return cfg


def student_grid(cfg: DistillConfig) -> list[int]:
    if cfg.timesteps:
        grid = [int(t) for t in cfg.timesteps.split(",")]
        if any(not 0 <= t <= 999 for t in grid) or grid != sorted(grid, reverse=True) or len(set(grid)) != len(grid):
            raise SystemExit(f"error: --timesteps must be distinct descending integers in [0, 999], got {cfg.timesteps!r}.")
        return grid
    if cfg.num_steps not in STUDENT_TIMESTEPS:
        raise SystemExit(
            f"error: --num_steps must be 1, 2 or 4 (the paper's grids), got {cfg.num_steps}; give --timesteps for another grid."
        )
    return list(STUDENT_TIMESTEPS[cfg.num_steps])


def validate(cfg: DistillConfig) -> None:
    """Every user error, with one sentence, before any work starts."""
    student_grid(cfg)
    weights = {"vsd": cfg.vsd * cfg.vsd_weight, "cd": cfg.cd * cfg.cd_weight, "lrm": cfg.lrm * cfg.reward_weight}
    if all(w <= 0 for w in weights.values()):
        raise SystemExit("error: every loss is off or weighted zero; enable at least one of --vsd, --cd, --lrm with a positive weight.")
    if cfg.lrm:
        try:
            get_reward(cfg.reward) if not cfg.reward.startswith("clip:") else None
        except ValueError as err:
            raise SystemExit(f"error: {err}") from None
    if cfg.batch_size < 1 or cfg.max_iters < 1 or cfg.fake_steps < 0 or cfg.cd_skip < 1:
        raise SystemExit("error: batch_size, max_iters and cd_skip must be positive and fake_steps non-negative.")
    if cfg.resume and cfg.resume != "latest" and not os.path.isdir(cfg.resume):
        raise SystemExit(f"error: --resume {cfg.resume} is not a checkpoint folder; use 'latest' or an existing folder.")


def load_teacher(name: str) -> DollarPipeline:
    try:
        pipe = DollarPipeline.from_pretrained(name)
    except ModelLoadError as err:
        raise SystemExit(f"error: {err}") from None
    if pipe.is_student:
        raise SystemExit(f"error: {name} is already a distilled student; give a teacher pipeline.")
    return pipe


def main(cfg: DistillConfig) -> dict:
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision)
    set_seed(cfg.seed)
    grid = student_grid(cfg)
    pipe = load_teacher(cfg.teacher)
    device = accelerator.device
    teacher = pipe.transformer.to(device).requires_grad_(False).eval()
    accelerator.print(f"attention backend: {set_attention_backend(teacher, cfg.attention_backend)}")
    student = copy.deepcopy(teacher).requires_grad_(True).train()
    fake = copy.deepcopy(teacher).requires_grad_(True).train()
    if cfg.gradient_checkpointing:
        student.enable_gradient_checkpointing()
        fake.enable_gradient_checkpointing()
    ema_student = copy.deepcopy(teacher).requires_grad_(False).eval()
    alphas = pipe.scheduler.alphas_cumprod.float().to(device)
    pt = pipe.config.prediction_type

    # Real data, encoded once and cached next to the output.
    clips = VideoFolderDataset(cfg.data) if cfg.data else WorldVideoDataset(cfg.num_clips, seed=1_000_000)
    prompts = [clips.captions(i, 1)[0] for i in range(len(clips))]
    cache_path = os.path.join(cfg.output_dir, "cache", "data.safetensors")
    if os.path.exists(cache_path):
        cache = load_file(cache_path)
    else:
        cache = encode_dataset(pipe.vae, pipe.tokenizer, pipe.text_encoder, clips, 1, progress=accelerator.is_main_process)
        if accelerator.is_main_process:
            os.makedirs(os.path.dirname(cache_path), exist_ok=True)
            save_file(cache, cache_path)
    latents, text_states, null_states = cache["latents"], cache["text_states"][:, 0], cache["null_states"]

    _, c, _, h, _ = latents.shape
    stride = 2 if h <= 16 else 4
    reward_model = LatentRewardModel(
        latent_channels=c, first_kernel=stride, first_stride=stride, text_dim=text_states.shape[-1] if cfg.lrm_text_conditioned else 0
    )
    reward_fn = get_reward(cfg.reward) if cfg.lrm else None

    opt_g = torch.optim.AdamW(student.parameters(), lr=cfg.generator_lr, weight_decay=0.0)
    opt_f = torch.optim.AdamW(fake.parameters(), lr=cfg.fake_lr, weight_decay=0.0)
    opt_r = torch.optim.AdamW(reward_model.parameters(), lr=cfg.lrm_lr)
    student, fake, reward_model, opt_g, opt_f, opt_r = accelerator.prepare(student, fake, reward_model, opt_g, opt_f, opt_r)
    accelerator.register_for_checkpointing(ema_student)

    teacher_den = Denoiser(teacher, alphas, pt)
    student_den = Denoiser(student, alphas, pt)
    fake_den = Denoiser(fake, alphas, pt)
    ema_den = Denoiser(ema_student, alphas, pt)
    cd_grid = trailing_timesteps(50)

    ckpt_root = os.path.join(cfg.output_dir, "checkpoints")
    it = 0
    if cfg.resume:
        folder = cfg.resume
        if cfg.resume == "latest":
            found = sorted(os.listdir(ckpt_root)) if os.path.isdir(ckpt_root) else []
            folder = os.path.join(ckpt_root, found[-1]) if found else ""
        if folder:
            accelerator.load_state(folder)
            it = json.load(open(os.path.join(folder, "iteration.json")))["iteration"]
            accelerator.print(f"resumed from {folder} (iteration {it})")
    os.makedirs(cfg.output_dir, exist_ok=True)
    log = open_log(os.path.join(cfg.output_dir, "train_log.jsonl"), it)
    bar = tqdm(total=cfg.max_iters, initial=it, disable=not accelerator.is_main_process)
    history = []
    start_time = time.time()
    while it < cfg.max_iters:
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + it * 7919 + accelerator.process_index)
        idx = torch.randint(0, len(latents), (cfg.batch_size,), generator=g)
        text = text_states[idx].float().to(device)
        null = null_states.float().expand_as(text).to(device)
        x0_real = latents[idx].float().to(device)
        noise = torch.randn(x0_real.shape, generator=g).to(device)
        step = int(torch.randint(0, len(grid), (1,), generator=g))
        t_step = torch.full((cfg.batch_size,), grid[step], dtype=torch.long, device=device)

        def student_at(x, t):
            return student_den(x, torch.full((x.shape[0],), t, dtype=torch.long, device=device), text)

        x_in = student_training_input(student_at, noise, grid, alphas, step, g)
        record = {"iteration": it + 1, "student_step": step}

        # 1. Generator: VSD + CD.
        x_gen = student_den(x_in, t_step, text)[0]
        loss_g = torch.zeros((), device=device)
        if cfg.vsd and cfg.vsd_weight > 0:
            loss_vsd = vsd_loss(
                x_gen,
                lambda x, t: teacher_den.guided(x, t, text, null, cfg.real_guidance_w)[0],
                lambda x, t: fake_den(x, t, text)[0],
                alphas,
                generator=g,
            )
            loss_g = loss_g + cfg.vsd_weight * loss_vsd
            record["loss_vsd"] = loss_vsd.item()
        if cfg.cd and cfg.cd_weight > 0:

            def teacher_int(x, t):
                return teacher_den.guided(x, torch.full((x.shape[0],), t, dtype=torch.long, device=device), text, null, cfg.cd_guidance_w)

            loss_cd = consistency_loss(
                lambda x, t: student_den(x, t, text)[0],
                lambda x, t: ema_den(x, t, text)[0],
                teacher_int,
                x0_real,
                alphas,
                cd_grid,
                m=cfg.cd_skip,
                generator=g,
            )
            loss_g = loss_g + cfg.cd_weight * loss_cd
            record["loss_cd"] = loss_cd.item()
        if loss_g.requires_grad:
            opt_g.zero_grad(set_to_none=True)
            accelerator.backward(loss_g)
            accelerator.clip_grad_norm_(student.parameters(), 1.0)
            opt_g.step()
        with torch.no_grad():
            for p_ema, p in zip(ema_student.parameters(), accelerator.unwrap_model(student).parameters()):
                p_ema.lerp_(p.detach(), 1.0 - cfg.ema_decay)

        # 2. Fake score on the student's samples.
        x_fake_data = x_gen.detach()
        if cfg.vsd:
            for _ in range(cfg.fake_steps):
                loss_f = fake_score_loss(fake, x_fake_data, text, alphas, generator=g)
                opt_f.zero_grad(set_to_none=True)
                accelerator.backward(loss_f)
                accelerator.clip_grad_norm_(fake.parameters(), 1.0)
                opt_f.step()
            record["loss_fake"] = loss_f.item() if cfg.fake_steps else None

        # 3. Latent reward model: fit on decoded real and generated clips; 4. climb it.
        if cfg.lrm and cfg.reward_weight > 0:
            both = torch.cat([x_fake_data, x0_real])
            with torch.no_grad():
                frames = postprocess_video(pipe.decode_latents(both), "np")
            batch_prompts = [prompts[i] for i in idx.tolist()] * 2
            rewards = torch.as_tensor(reward_fn(frames, batch_prompts), dtype=torch.float32, device=device)
            both_text = torch.cat([text, text]) if cfg.lrm_text_conditioned else None
            loss_fit = latent_reward_fit_loss(reward_model, both, rewards, both_text)
            opt_r.zero_grad(set_to_none=True)
            accelerator.backward(loss_fit)
            opt_r.step()
            x_gen = student_den(x_in, t_step, text)[0]
            loss_ft = reward_finetune_loss(reward_model, x_gen, text if cfg.lrm_text_conditioned else None)
            opt_g.zero_grad(set_to_none=True)
            accelerator.backward(cfg.reward_weight * loss_ft)
            accelerator.clip_grad_norm_(student.parameters(), 1.0)
            opt_g.step()
            opt_r.zero_grad(set_to_none=True)  # the reward model is not trained by L_FT
            record.update(
                loss_lrm_fit=loss_fit.item(),
                reward_generated=rewards[: cfg.batch_size].mean().item(),
                reward_real=rewards[cfg.batch_size :].mean().item(),
                loss_ft=loss_ft.item(),
            )

        it += 1
        history.append(record)
        bar.update(1)
        if accelerator.is_main_process:
            log.write(json.dumps(record) + "\n")
            log.flush()
        if it % cfg.checkpoint_every == 0 or it == cfg.max_iters:
            folder = os.path.join(ckpt_root, f"iteration-{it:07d}")
            accelerator.save_state(folder)
            if accelerator.is_main_process:
                json.dump({"iteration": it}, open(os.path.join(folder, "iteration.json"), "w"))
    bar.close()

    if accelerator.is_main_process:
        final = copy.deepcopy(accelerator.unwrap_model(student)).eval()
        out = DollarPipeline(
            transformer=final,
            vae=pipe.vae,
            scheduler=pipe.scheduler,
            text_encoder=pipe.text_encoder,
            tokenizer=pipe.tokenizer,
            prediction_type=pt,
            student_timesteps=grid,
            default_guidance_scale=1.0,
        )
        out.save_pretrained(cfg.output_dir)
        if cfg.lrm:
            accelerator.unwrap_model(reward_model).save_pretrained(os.path.join(cfg.output_dir, "latent_reward_model"))
        accelerator.print(f"saved the {len(grid)}-step student to {cfg.output_dir} ({time.time() - start_time:.0f} s)")
    return {"iterations": it, "history": history}


if __name__ == "__main__":
    main(parse_config())
