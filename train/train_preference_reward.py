"""Train a preference latent reward model on arena votes (issue 20): the LRM architecture of
METHOD.md scores each video's latents, and a Bradley-Terry loss on the two scores of every vote
(dollar.losses.bradley_terry_loss) teaches it which video raters preferred.

    python -m dollar.arena export-preferences --out prefs/          # the votes, with re-rendered latents
    python train/train_preference_reward.py --prefs prefs/ --output_dir runs/prefs-lrm
    python train/distill.py --reward preference:runs/prefs-lrm ...  # a student fine-tuned on it (frozen)

Reads top to bottom: load one criterion's pairs, hold out whole prompts, train, measure the
pairwise accuracy on the held-out prompts, save the model (safetensors + config), its
``preference_eval.json`` and a model card naming the dataset version it learned from.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass

import torch
from accelerate import Accelerator

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dollar.checkpointing import checkpoint_when_due, resume_or_exit, start_log  # noqa: E402
from dollar.config import TrainerRunConfig, parse_config  # noqa: E402
from dollar.distill_setup import reward_network  # noqa: E402
from dollar.losses import bradley_terry_loss  # noqa: E402
from dollar.preferences import PreferenceError, load_preferences, pairwise_accuracy, split_by_prompt  # noqa: E402
from dollar.ranking import CRITERIA  # noqa: E402


@dataclass
class PreferenceRewardConfig(TrainerRunConfig):
    prefs: str = ""  # a dataset folder from `python -m dollar.arena export-preferences`
    output_dir: str = "runs/prefs-lrm"
    config: str = ""  # YAML file with any of these fields; command-line flags override it
    criterion: str = "overall"  # which question's answers to learn
    max_votes: int = 0  # only the dataset's first N votes (0: all), for a learning curve
    heldout_fraction: float = 0.2  # share of the prompts held out for the pairwise accuracy
    steps: int = 300
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.05
    hidden_channels: int = 32
    threads: int = 0  # torch CPU threads (0: torch's default)
    log_every: int = 25


def check_config(cfg: PreferenceRewardConfig) -> None:
    """Every user error, with one sentence, before any work starts."""
    if not cfg.prefs:
        raise SystemExit("error: pass --prefs, a folder written by `python -m dollar.arena export-preferences --out <folder>`.")
    if cfg.criterion not in CRITERIA:
        raise SystemExit(f"error: --criterion must be one of {', '.join(CRITERIA)}, got {cfg.criterion!r}.")
    if cfg.max_votes < 0:
        raise SystemExit(f"error: --max_votes must be 0 (all) or a positive number, got {cfg.max_votes}.")
    if not 0 <= cfg.heldout_fraction < 1:
        raise SystemExit(f"error: --heldout_fraction must be in [0, 1), got {cfg.heldout_fraction}.")
    if min(cfg.steps, cfg.batch_size, cfg.hidden_channels, cfg.log_every, cfg.checkpoint_every) < 1 or cfg.hidden_channels % 8:
        raise SystemExit("error: steps, batch_size, log_every and checkpoint_every must be positive, hidden_channels a multiple of 8.")


def main(cfg: PreferenceRewardConfig) -> dict:
    # ------------------------------------------------------------------ build
    check_config(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        pairs = load_preferences(cfg.prefs, cfg.criterion, cfg.max_votes)
    except PreferenceError as err:
        raise SystemExit(f"error: {err}") from None
    train_idx, held_idx = split_by_prompt(pairs.prompts, cfg.heldout_fraction, cfg.seed)
    _, c, _, h, _ = pairs.latents_a.shape
    torch.manual_seed(cfg.seed)
    model = reward_network(c, h, hidden_channels=cfg.hidden_channels)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    accelerator = Accelerator(cpu=True, mixed_precision=cfg.mixed_precision)
    accelerator.register_for_checkpointing(model, opt)
    ckpt_root = os.path.join(cfg.output_dir, "checkpoints")
    saved = resume_or_exit(accelerator, cfg.resume, ckpt_root)
    step = saved["step"] if saved else 0
    log, start, bar = start_log(accelerator, cfg.output_dir, step, cfg.steps)

    # ------------------------------------------------------------------ loop
    model.train()
    while step < cfg.steps:
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)  # the batch is a function of the step: exact resume
        batch = torch.as_tensor(train_idx)[torch.randint(len(train_idx), (cfg.batch_size,), generator=g)]
        loss = bradley_terry_loss(model(pairs.latents_a[batch]), model(pairs.latents_b[batch]), pairs.label[batch])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            log.write(json.dumps({"step": step, "loss": round(loss.item(), 5)}) + "\n")
            log.flush()
        if checkpoint_when_due(accelerator, cfg, ckpt_root, step, cfg.steps, start):
            return {"stopped_at": step}
    bar.close()

    # ------------------------------------------------------------------ measure, save
    model.eval()
    result = {
        "heldout_pairwise_accuracy": pairwise_accuracy(model, pairs, held_idx),
        "train_pairwise_accuracy": pairwise_accuracy(model, pairs, train_idx),
        "heldout_pairs": int(len(held_idx)),
        "train_pairs": int(len(train_idx)),
        "heldout_prompts": len({pairs.prompts[i] for i in held_idx}),
        "votes_used": len(pairs),
        "dataset": {k: pairs.manifest.get(k) for k in ("dataset_version", "votes", "raters", "store", "created_at")},
        "dataset_folder": os.path.abspath(cfg.prefs),
        "train_seconds": time.time() - start,
        "config": asdict(cfg),
    }
    model.save_pretrained(cfg.output_dir)
    with open(os.path.join(cfg.output_dir, "preference_eval.json"), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(cfg.output_dir, "README.md"), "w") as f:
        f.write(model_card(result, sum(p.numel() for p in model.parameters())))
    print(json.dumps({k: result[k] for k in ("heldout_pairwise_accuracy", "train_pairwise_accuracy", "heldout_pairs", "train_pairs")}))
    return result


def model_card(result: dict, parameters: int) -> str:
    data, cfg = result["dataset"], result["config"]
    accuracy = result["heldout_pairwise_accuracy"]
    shown = "n/a (nothing held out)" if accuracy is None else f"{100 * accuracy:.1f}%"
    return f"""# Preference latent reward model

A latent reward model (METHOD.md's LRM, {parameters / 1e3:.0f}k parameters, not text-conditioned) trained with a
Bradley-Terry loss on the *{cfg["criterion"]}* answers of the DOLLAR arena's counted votes.

- **Data**: preference dataset version `{data["dataset_version"]}` ({data["votes"]} votes from {data["raters"]} raters,
  exported {data["created_at"]} from `{data["store"]}`; folder `{result["dataset_folder"]}`).
- **Held-out pairwise accuracy**: {shown} on {result["heldout_pairs"]} pairs of {result["heldout_prompts"]} prompts never
  trained on (ties left out); {100 * (result["train_pairwise_accuracy"] or 0):.1f}% on the {result["train_pairs"]} training pairs.
- **Use**: `python train/distill.py --reward preference:<this folder>` fine-tunes a student on it, frozen, through the
  latent reward path (no decoding); it can be combined with black-box rewards, e.g. `preference:<folder>=1.0,motion=0.5`.
"""


if __name__ == "__main__":
    main(parse_config(PreferenceRewardConfig))
