"""Distil a teacher into a 1-, 2- or 4-step student with DOLLAR (shared/METHOD.md section 3):
variational score distillation + consistency distillation + latent reward model fine-tuning.

    python train/distill.py                                   # bundled teacher -> 4-step student
    python train/distill.py --config train/configs/student-1-onestep.yaml --max_iters 2000
    python train/distill.py --cd false --lrm false            # the VSD-only ablation (DMD)
    python train/distill.py --reward preference:runs/prefs-lrm=1.0,motion=0.5   # arena votes' reward (frozen) + motion (fitted)
    accelerate launch --config_file train/configs/accelerate-ddp.yaml train/distill.py ...   # several GPUs (DDP)
    accelerate launch --config_file train/configs/accelerate-fsdp.yaml train/distill.py ...  # sharded (FSDP2)

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

The file reads top to bottom: build, loop, log, save. Its parts live in dollar/distill_setup.py
(networks, sharding, data, validation, export), the losses in dollar/losses.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from tqdm.auto import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dollar import config  # noqa: E402
from dollar.checkpointing import open_log, resume_or_exit, save_checkpoint  # noqa: E402
from dollar.denoiser import x0_only  # noqa: E402
from dollar.distill_setup import (  # noqa: E402
    Validation,
    batch_generator,
    build_networks,
    build_rewards,
    check_config,
    check_launch,
    check_memory_plan,
    check_training_size,
    collapse_sentinel,
    latent_reward_model,
    load_student_init,
    load_teacher,
    optimizer_class,
    optimizer_step,
    peak_memory,
    prepare_networks,
    prepared_data,
    roll_back,
    save_student,
    scaled_policy,
    student_grid,
    student_input,
    update_ema,
)
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
from dollar.models import set_attention_backend  # noqa: E402
from dollar.pipeline import postprocess_video  # noqa: E402


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
    reward: str = "motion"  # name[=weight],...: dollar.rewards names (motion = dynamic degree), clip:<model>, preference:<folder> (frozen)
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
    """Defaults <- YAML file (``--config``) <- command-line flags (dollar/config.py); then checked."""
    cfg = config.parse_config(DistillConfig, argv)
    check_config(cfg)
    return cfg


def main(cfg: DistillConfig) -> dict:
    # ------------------------------------------------------------------ build
    trackers = None if cfg.report_to in ("", "none") else cfg.report_to.split(",")
    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision,
        log_with=trackers,
        project_dir=cfg.output_dir,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=cfg.find_unused_parameters)],
    )
    set_seed(cfg.seed)
    check_launch(cfg, accelerator)
    if (cfg.plan or cfg.gpu_memory_gb or torch.cuda.is_available()) and check_memory_plan(cfg, accelerator):
        return {"iterations": 0, "history": [], "rollbacks": 0}
    cache_path = os.path.join(cfg.cache_dir or os.path.join(cfg.output_dir, "cache"), "data.safetensors")
    pipe = load_teacher(cfg.teacher, cfg.prediction_type, with_text_encoder=not os.path.exists(cache_path))
    latent_shape = pipe.latent_shape(*check_training_size(pipe, cfg))
    schedule = pipe.noise_schedule(latent_shape)
    grid = student_grid(cfg, schedule)
    cd_grid = schedule.grid(50)  # the teacher's 50-step grid; CD takes cd_skip steps on it
    device = accelerator.device
    attention_backend = set_attention_backend(pipe.transformer, cfg.attention_backend)
    accelerator.print(f"attention backend: {attention_backend}")
    pipe.vae.to(device)
    accelerator.print(f"teacher: {pipe.family.label}, {pipe.config.prediction_type} on a {schedule.kind} schedule; student grid {grid}")

    data = prepared_data(cfg, pipe, cache_path, device, accelerator.is_main_process)  # the text encoder is gone after this
    latents, text_states, prompts = data.latents, data.text_states, data.prompts
    if cfg.prepare_only:
        accelerator.print(f"encoded {len(latents)} clips and {len(data.val_prompts)} validation prompts into {cache_path}")
        return {"iterations": 0, "history": [], "rollbacks": 0, "cache": cache_path}

    nets = build_networks(cfg, pipe, "cpu" if accelerator.is_fsdp2 else device)  # FSDP: copies reach the GPU shard by shard
    if cfg.init_student:
        start_weights = load_student_init(cfg.init_student, pipe.transformer)
        nets.student.load_state_dict(start_weights)
        nets.ema.load_state_dict(start_weights)
        accelerator.print(f"student initialised from {cfg.init_student}")
    reward_model = latent_reward_model(cfg, data)
    reward_terms = build_rewards(cfg, latents.shape[1], device)
    reward_fn = reward_terms.pixel  # the black boxes' weighted sum, on decoded pixels; None with preference rewards alone
    adamw = optimizer_class(cfg)
    opt_g = adamw(nets.student.parameters(), lr=cfg.generator_lr, weight_decay=0.0)
    opt_f = adamw(nets.fake.parameters(), lr=cfg.fake_lr, weight_decay=0.0)
    opt_r = torch.optim.AdamW(reward_model.parameters(), lr=cfg.lrm_lr)
    nets, reward_model, opt_g, opt_f, opt_r = prepare_networks(accelerator, cfg, nets, reward_model, opt_g, opt_f, opt_r)
    student, fake, lora_base = nets.student, nets.fake, nets.lora_base
    teacher_den, student_den, fake_den, ema_den = (pipe.make_denoiser(m, latent_shape) for m in (nets.teacher, student, fake, nets.ema))

    sentinel = collapse_sentinel(cfg, pipe, data.latents, device)
    validate = Validation(
        cfg, pipe, student_den, data, latent_shape, grid, schedule, reward_fn, sentinel, device, accelerator.is_main_process
    )

    ckpt_root = os.path.join(cfg.output_dir, "checkpoints")
    it = 0
    if cfg.resume:
        saved = resume_or_exit(accelerator, cfg.resume, ckpt_root)
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
    last_train_reward = None  # the sentinel's reward-hacking check: the training reward, averaged over processes
    if cfg.validate_every and it == 0:
        first = validate(0, None)
        accelerator.print(f"validation before training: {first}")
        if accelerator.is_main_process:
            log.write(json.dumps({"iteration": 0, **first}) + "\n")

    # ------------------------------------------------------------------ loop
    bar = tqdm(total=cfg.max_iters, initial=it, disable=not accelerator.is_main_process)
    history = []
    start_time = time.time()
    memory = PeakMemory() if cfg.measure_memory else contextlib.nullcontext()
    memory.__enter__()
    while it < cfg.max_iters:
        g = batch_generator(cfg.seed, it, accelerator.process_index)
        idx = torch.randint(0, len(latents), (cfg.batch_size,), generator=g)
        text = text_states[idx].float().to(device)
        null = data.null_states.float().expand_as(text).to(device)
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
            ema_cond = x0_only(ema_den.conditioned(text))
            loss_cd = consistency_loss(x0_only(student_cond), ema_cond, teacher_cd, x0_real, schedule, cd_grid, m=cfg.cd_skip, generator=g)
            loss_g = loss_g + cfg.cd_weight * loss_cd
            record["loss_cd"] = loss_cd.item()
        if loss_g.requires_grad:
            optimizer_step(accelerator, opt_g, loss_g, student, lora_base, "student")
        update_ema(nets, accelerator.unwrap_model(student), cfg.ema_decay)

        # 2. Fake score on the student's samples: fresh samples (and prompts) for every update, as DMD2.
        if cfg.vsd:
            for _ in range(cfg.fake_steps):
                fresh_text = text_states[torch.randint(0, len(latents), (cfg.batch_size,), generator=g)].float().to(device)
                with torch.no_grad():
                    fresh_cond = student_den.conditioned(fresh_text)
                    x_fresh, fresh_step = student_input(fresh_cond, grid, schedule, x0_real.shape, g, device)
                    fresh = fresh_cond(x_fresh, grid[fresh_step])[0]
                loss_f = fake_score_loss(fake_den, fresh, fresh_text, generator=g)
                optimizer_step(accelerator, opt_f, loss_f, fake, lora_base, "fake")
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
            optimizer_step(accelerator, opt_g, cfg.reward_weight * loss_pg, student, lora_base, "student")
            generated = rewards
            record.update(loss_ddpo=loss_pg.item(), reward_generated=rewards.mean().item())
        elif cfg.lrm and cfg.reward_weight > 0:
            if reward_fn is not None:  # black-box rewards: fit R_lat on decoded real and generated clips
                both = torch.cat([x_gen.detach(), x0_real])
                with torch.no_grad():
                    frames = postprocess_video(pipe.decode_latents(both, cfg.decode_batch_size), "np")
                pixel = torch.as_tensor(reward_fn(frames, batch_prompts * 2), dtype=torch.float32, device=device)
                both_text = torch.cat([text, text]) if cfg.lrm_text_conditioned else None
                loss_fit = latent_reward_fit_loss(reward_model, both, pixel, both_text)
                optimizer_step(accelerator, opt_r, loss_fit, reward_model, clip=0)
                record.update(loss_lrm_fit=loss_fit.item(), reward_real=pixel[cfg.batch_size :].mean().item())
            x_gen = student_den(x_in, t_step, text)[0]
            frozen = reward_terms.frozen_scores(x_gen)  # pretrained latent rewards (preference:), never fitted here
            loss_ft = -frozen.mean()
            if reward_fn is not None:
                loss_ft = loss_ft + reward_finetune_loss(reward_model, x_gen, text if cfg.lrm_text_conditioned else None)
            optimizer_step(accelerator, opt_g, cfg.reward_weight * loss_ft, student, lora_base, "student")
            opt_r.zero_grad(set_to_none=True)  # the reward model is not trained by L_FT
            generated = pixel[: cfg.batch_size] if reward_fn is not None else frozen.detach()
            record.update(reward_generated=generated.mean().item(), loss_ft=loss_ft.item())
            if reward_terms.frozen:
                record["reward_preference"] = frozen.mean().item()
        if cfg.lrm and cfg.reward_weight > 0:
            last_train_reward = accelerator.reduce(generated.mean(), "mean").item()

        # ------------------------------------------------------------------ log, validate, checkpoint
        it += 1
        record["lr_generator"] = opt_g.param_groups[0]["lr"]
        rolled_back_to = None
        if cfg.validate_every and it % cfg.validate_every == 0:
            record.update(validate(it, last_train_reward))
            healthy = not record["sentinel"]
            if not healthy:
                accelerator.print(f"collapse sentinel at iteration {it}: {'; '.join(record['sentinel'])}")
                if cfg.rollback and rollbacks < cfg.max_rollbacks:
                    rolled_back_to = roll_back(accelerator, ckpt_root, it, opt_g, record["sentinel"])
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

    # ------------------------------------------------------------------ save
    memory_record = {}
    if cfg.measure_memory:
        modules = (nets.teacher, student, fake, nets.ema, reward_model, pipe.vae, pipe.text_encoder)
        resident = tensor_bytes(*(m for m in modules if m is not None))
        memory_record = {
            "resident_tensor_bytes": resident,
            "loop_peak_tensor_bytes": memory.peak,
            "data_tensor_bytes": latents.nbytes + text_states.nbytes,
        }
        accelerator.print(f"memory: {resident / 2**20:.1f} MiB resident, training-loop peak {memory.peak / 2**20:.1f} MiB above it")
    record = {"iterations_done": it, "rollbacks": rollbacks, "seconds": time.time() - start_time, **peak_memory()}
    save_student(accelerator, cfg, pipe, nets, reward_model, grid, record, memory_record)
    accelerator.end_training()  # after the save: gathering sharded weights needs the process group
    accelerator.print(f"saved the {len(grid)}-step student to {cfg.output_dir} ({time.time() - start_time:.0f} s)")
    return {
        "iterations": it,
        "history": history,
        "rollbacks": rollbacks,
        "student": accelerator.unwrap_model(student),
        "teacher": nets.teacher,
        "fake": accelerator.unwrap_model(fake),
        "ema": nets.ema,
        "reward_model": reward_model,
        "lora_base": lora_base,
        "memory": memory_record,
        "attention_backend": attention_backend,
    }


if __name__ == "__main__":
    main(parse_config())
