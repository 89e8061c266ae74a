#!/usr/bin/env bash
# The shapes issue's latent-space choice, cheaply first: train each candidate VAE for the same
# compute (8x spatial with 48 channels costs ~0.75 s per step of batch 8 on 2 CPU cores, 4x with
# 12 channels ~2.5 s, so 500 and 150 steps; 8x with a three-level decoder ~1 s, 500 steps), then compare them with the bundled VAE by
# benchmarks/latent_shape.py (PSNR; the attribute probe's shape and two-object composition on
# reconstructions; a classifier trained on latents). Resumable: rerun after a stop.
#   bash benchmarks/latent_candidates.sh [runs_dir]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs/latent-candidates}
mkdir -p "$RUNS"
train() {  # name, JSON architecture, steps, warmup
    python train/train_vae.py --output_dir "$RUNS/$1" --vae_config "$2" --max_steps "$3" --warmup_steps "$4" --batch_size 8 \
        --learning_rate 1.5e-3 --foreground_weight 4 --eval_every "$3" --checkpoint_every 50 --resume latest
}
[ -f "$RUNS/c48-8x/config.json" ] || train c48-8x '{"latent_channels": 48}' 500 100
[ -f "$RUNS/c12-4x/config.json" ] || train c12-4x '{"patch_size": 2}' 150 30
# 8x with 48 channels and a decoder that ends at 32x32 (2x2 pixel patches, three levels) instead of 16x16 (4x4 patches):
# the 4x4 pixel shuffle makes the last 4x4x4 block of pixels a linear function of 96 features, which rounds corners.
[ -f "$RUNS/c48-8x-deep/config.json" ] || train c48-8x-deep '{"latent_channels": 48, "patch_size": 2, "block_out_channels": [32, 96, 128]}' 500 100
python benchmarks/latent_shape.py --vae teacher "$RUNS/c48-8x" "$RUNS/c12-4x" "$RUNS/c48-8x-deep" --clips 1500 --steps 600 \
    --out benchmarks/results/latent_candidates.json

# Round two (session 11): whole clips cost 1.9-3.3 s per step of batch 8 on these 2 cores (benchmarks/vae_step_cost.py),
# so train on 32x32 windows of 9 frames around the objects (batch 16, 5.5-6.3x cheaper per clip) with the edge loss,
# and compare the three-level decoder with and without its top level at the full frame rate
# (without it, the last layer writes 4 frames from one feature vector and smears moving objects).
crops() {  # name, JSON architecture, steps
    python train/train_vae.py --output_dir "$RUNS/$1" --vae_config "$2" --max_steps "$3" --warmup_steps 50 --batch_size 16 \
        --learning_rate 1.5e-3 --foreground_weight 4 --edge_weight 0.5 --crop_size 32 --crop_frames 9 \
        --eval_every "$3" --checkpoint_every 100 --resume latest
}
DEEP='"latent_channels": 48, "patch_size": 2, "block_out_channels": [32, 96, 128]'
[ -f "$RUNS/crops-deep/config.json" ] || crops crops-deep "{$DEEP}" 300
[ -f "$RUNS/crops-deep-fr/config.json" ] || crops crops-deep-fr "{$DEEP, \"full_rate_top\": true}" 300
python benchmarks/latent_shape.py --vae "$RUNS/crops-deep" "$RUNS/crops-deep-fr" --clips 400 --steps 200 \
    --out benchmarks/results/latent_candidates_crops.json
