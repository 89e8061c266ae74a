"""Generate one video from the command line.

python -m dollar.generate --model teacher --prompt "a red circle moving left" --seed 0 --out red.mp4
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import torch

from dollar.arg_types import positive_int
from dollar.model_specs import quiet_command


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dollar.generate", description=__doc__.strip().splitlines()[0])
    p.add_argument(
        "--model", default="teacher", help="bundled name (teacher, student-1, student-2, student-4), a pipeline folder, or a hub id"
    )
    p.add_argument("--prompt", required=True, help="text prompt; an empty prompt generates unconditionally")
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--steps", type=positive_int, default=None, help="denoising steps (default: 50 for a teacher, the trained count for a student)"
    )
    p.add_argument(
        "--guidance", type=float, default=None, help="guidance scale, diffusers convention (<= 1 is off); default: the checkpoint's"
    )
    p.add_argument("--num-frames", "--num_frames", type=positive_int, default=None, help="frames (default: the checkpoint's, e.g. 17)")
    p.add_argument("--height", type=positive_int, default=None, help="pixels (default: the checkpoint's, e.g. 64)")
    p.add_argument("--width", type=positive_int, default=None, help="pixels (default: the checkpoint's, e.g. 64)")
    p.add_argument(
        "--prediction-type",
        "--prediction_type",
        default=None,
        help="override the prediction type read from the folder (epsilon, v_prediction, flow, ...)",
    )
    p.add_argument(
        "--fast-decode",
        "--fast_decode",
        action="store_true",
        help="decode with the tiny decoder distilled from the model's VAE (several times faster, a preview's quality)",
    )
    p.add_argument("--out", required=True, help="output file: .mp4, .gif or .npy (uint8 [T,H,W,3])")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    quiet_command()
    from dollar.pipeline import DollarPipeline
    from dollar.video import VIDEO_SUFFIXES, save_video

    try:
        ext = os.path.splitext(args.out)[1].lower()
        if ext not in VIDEO_SUFFIXES:
            raise ValueError(f"Unsupported output extension '{ext}'; use one of {', '.join(VIDEO_SUFFIXES)}.")
        folder = os.path.dirname(os.path.abspath(args.out))
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"The output folder {folder} does not exist; create it first.")
        if not 0 <= args.seed < 2**63:
            raise ValueError(f"--seed must be between 0 and 2**63 - 1, got {args.seed}.")
        if not args.prompt.strip():
            print("note: empty prompt, generating unconditionally.", file=sys.stderr)
        pipe = DollarPipeline.from_pretrained(args.model, prediction_type=args.prediction_type)
        pipe.set_progress_bar_config(disable=True)
        out = pipe(
            args.prompt,
            negative_prompt=args.negative_prompt,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
            num_frames=args.num_frames,
            height=args.height,
            width=args.width,
            generator=torch.Generator().manual_seed(args.seed),
            decoder="tiny" if args.fast_decode else "full",
        )
        save_video(out.frames[0], args.out)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    t = out.timings
    print(
        f"wrote {args.out}: {t['nfe']} network evaluations, text {t['text_encoding_s']:.3f} s, "
        f"denoising {t['denoising_s']:.3f} s, decoding {t['decoding_s']:.3f} s ({'tiny' if args.fast_decode else 'full'} decoder)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
