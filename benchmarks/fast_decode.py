"""Fast decode and the prompt cache, measured (issue #19); writes benchmarks/results/fast_decode.json.

    python benchmarks/fast_decode.py                          # about 15 minutes on 2 CPU threads
    python benchmarks/fast_decode.py --runs 5 --seeds 0 --out /tmp/fd.json   # a quick look

1. Latency (``dollar.bench``, one run, the jobs taking turns round by round): the 50-step teacher
   with the full decoder, and student-1 with the full and the tiny decoder, each with a cold
   prompt (the prompt cache emptied, so the text encoder runs) and a warm one (cached); medians
   per stage and paired per-round ratios: student-1 + tiny decoder against the teacher + full
   decoder (cold against cold, warm against warm), and the decode speedup (student-1's full over
   tiny decoding seconds in the same rounds).
2. Fidelity on the held-out prompts (64 unseen colour-shape-motion prompts and 16 two-object
   ones) under ``--seeds``: every model rendered by ``dollar.evaluate.render`` once per decoder
   (the same seeds give the same latents), the tiny decoder's PSNR against the full decoder's
   video, and the checker's colour and motion and the probe's shape (``dollar.evaluate.score_videos``)
   for both decoders, with the difference in points.
3. Where a cold prompt's text time goes (tokenizer, the encoder under no_grad and under
   inference_mode) and whether torch.compile pays: compile seconds and per-call time, eager
   against compiled, for the tiny decoder and the text encoder.

The machine's load averages are recorded beside the timings (other jobs share this CPU).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sys
import tempfile
import time

# On a shared machine OpenMP's spinning threads fight the other jobs' (a 50-step video took 14 s
# instead of 1 s at a load average of 2); sleeping threads do not. Set before torch starts its pool; recorded in the JSON.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dollar import world  # noqa: E402
from dollar.bench import BenchJob, bench_models, load_context, paired_ratio, paired_speedups, spread  # noqa: E402
from dollar.evaluate import DEFAULT_PROBE, render, score_videos  # noqa: E402
from dollar.metrics import psnr  # noqa: E402
from dollar.model_specs import load_pipeline, parse_model_spec, quiet_command  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
README_MARKERS = ("<!-- fast-decode:start -->", "<!-- fast-decode:end -->")
PROMPT = "a red circle moving left on a black background"


def latency(runs: int, warmup: int) -> dict:
    specs = {name: parse_model_spec(name) for name in ("teacher", "student-1")}
    cache: dict = {}
    for spec in specs.values():
        load_pipeline(spec, cache).tiny_decoder()  # loaded (and the VAE hashed) before any timing
    getter = {name: (lambda spec=spec: load_pipeline(spec, cache)) for name, spec in specs.items()}
    jobs = [
        BenchJob(specs["teacher"], getter["teacher"], "full"),
        BenchJob(specs["student-1"], getter["student-1"], "full"),
        BenchJob(specs["student-1"], getter["student-1"], "tiny"),
    ]
    before = load_context()
    models, samples = bench_models(jobs, PROMPT, runs, warmup, batch_size=1)
    paired_speedups(models, samples, jobs[0].label)
    teacher, full, tiny = (j.label for j in jobs)
    return {
        "prompt": PROMPT,
        "threads": torch.get_num_threads(),
        "load_before": before,
        "load_after": load_context(),
        "models": models,
        "headline": {
            "student1_tiny_vs_teacher50_full_end_to_end_cold_paired": models[tiny]["speedup_end_to_end_paired"],
            "student1_tiny_vs_teacher50_full_end_to_end_warm_paired": models[tiny]["warm"]["speedup_end_to_end_paired"],
            "student1_full_vs_teacher50_full_end_to_end_cold_paired": models[full]["speedup_end_to_end_paired"],
            "decode_speedup_full_over_tiny_paired": paired_ratio(samples, full, tiny, "decoding_s"),
            "text_cold_over_warm_student1_paired": paired_ratio_modes(samples[tiny], "text_encoding_s"),
        },
        "per_round_s": samples,
    }


def paired_ratio_modes(by_mode: dict, part: str) -> dict:
    """Per-round cold / warm ratio of one part of one job."""
    return spread([c / max(w, 1e-12) for c, w in zip(by_mode["cold"][part], by_mode["warm"][part], strict=True)])


def points(values) -> float | None:
    return 100.0 * float(np.mean(values)) if len(values) else None


def fidelity(model_names, seeds, batch_size: int) -> dict:
    from dollar.models.probe import AttributeProbe

    probe = AttributeProbe.from_pretrained(DEFAULT_PROBE).eval()
    prompts = world.heldout_prompt_specs(64) + world.two_object_prompt_specs(16)
    out = {"prompts": len(prompts), "seeds": list(seeds), "models": {}}
    for name in model_names:
        spec = parse_model_spec(name)
        pipe = load_pipeline(spec)
        videos = {d: [] for d in ("full", "tiny")}
        for seed in seeds:
            for decoder in videos:
                videos[decoder].append(render(functools.partial(pipe, decoder=decoder), spec, prompts, seed, batch_size)[0])
        videos = {d: np.concatenate(v) for d, v in videos.items()}
        everything = prompts * len(seeds)
        scores = {d: score_videos(v, everything, probe) for d, v in videos.items()}
        as_float = {d: torch.from_numpy(v).float() / 127.5 - 1.0 for d, v in videos.items()}
        per_video = [psnr(t, f) for t, f in zip(as_float["tiny"], as_float["full"])]
        row = {"videos": len(per_video), "psnr_tiny_vs_full_db": {"mean": float(np.mean(per_video)), **spread(per_video)}}
        for figure, key in (("colour", "checker_colour"), ("motion", "checker_motion"), ("shape", "probe_shape")):
            full, tiny = points(scores["full"][key]), points(scores["tiny"][key])
            row[figure] = {"full": full, "tiny": tiny, "delta_points": tiny - full, "verdicts": len(scores["full"][key])}
        out["models"][name] = row
        print(
            f"{name}: tiny vs full {row['psnr_tiny_vs_full_db']['mean']:.2f} dB; "
            + ", ".join(f"{k} {row[k]['full']:.1f} -> {row[k]['tiny']:.1f}" for k in ("colour", "motion", "shape")),
            file=sys.stderr,
        )
    return out


def paired_ms(fns: dict, rounds: int = 30) -> dict:
    """Median milliseconds of each of ``fns`` (name -> callable), taking turns round by round
    (so a busy spell of the machine hits each alike), and the median per-round ratio of the
    first to each of the others."""
    times = {k: [] for k in fns}
    for i in range(rounds + 2):
        for k, fn in fns.items():
            start = time.perf_counter()
            fn()
            if i >= 2:
                times[k].append(time.perf_counter() - start)
    first = next(iter(fns))
    out = {f"{k}_ms": 1000 * float(np.median(v)) for k, v in times.items()}
    out.update({f"{first}_over_{k}": float(np.median(np.array(times[first]) / np.array(v))) for k, v in times.items() if k != first})
    return out


# a long-running app renders a few thousand videos in a session; compiling pays only if it saves its own time back by then
COMPILE_PAYS_WITHIN_CALLS = 5000


def text_and_compile(compile_check: bool) -> dict:
    pipe = load_pipeline("student-1")
    tokenizer, encoder = pipe.tokenizer, pipe.text_encoder
    tokens = tokenizer([PROMPT], padding="longest", truncation=True, max_length=pipe.text_length, return_tensors="pt")

    def encode(mode):
        with mode():
            encoder(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask)

    def cold():
        pipe.prompt_cache.clear()
        pipe.encode_text([PROMPT])

    text = {
        "prompt_tokens": int(tokens.input_ids.shape[1]),
        "padded_to": pipe.text_length,
        **paired_ms({"encoder_no_grad": lambda: encode(torch.no_grad), "encoder_inference_mode": lambda: encode(torch.inference_mode)}),
        **paired_ms(
            {
                "encode_text_cold": cold,
                "encode_text_warm": lambda: pipe.encode_text([PROMPT]),
                "tokenizer": lambda: tokenizer([PROMPT], padding="longest", truncation=True, max_length=64, return_tensors="pt"),
            }
        ),
    }
    result = {"text": text}
    if not compile_check:
        return result
    z = pipe(PROMPT, output_type="latent", generator=torch.Generator().manual_seed(0)).frames
    tiny = pipe.tiny_decoder()
    checks = {"tiny_decoder": (tiny, [(z,)]), "text_encoder": (encoder, [(tokens.input_ids, tokens.attention_mask)])}
    other = tokenizer(["a small blue square bouncing quickly on a striped background"], return_tensors="pt")
    checks["text_encoder"][1].append((other.input_ids, other.attention_mask))  # a second prompt length
    compiled = {}
    cache = tempfile.mkdtemp(prefix="inductor-")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache  # an empty cache: what a fresh machine pays to compile
    for name, (module, inputs) in checks.items():
        try:
            fn = torch.compile(module)
            with torch.inference_mode():
                first = []
                for x in inputs:
                    start = time.perf_counter()
                    fn(*x)
                    first.append(time.perf_counter() - start)
                timed = paired_ms({"eager": lambda m=module, x=inputs[0]: m(*x), "compiled": lambda f=fn, x=inputs[0]: f(*x)})
            saved_s = (timed["eager_ms"] - timed["compiled_ms"]) / 1000
            break_even = sum(first) / saved_s if saved_s > 0 else None
            compiled[name] = {
                **timed,
                "compile_s_per_shape": first,
                "break_even_calls": break_even,
                "pays": break_even is not None and break_even < COMPILE_PAYS_WITHIN_CALLS,
            }
        except Exception as err:  # noqa: BLE001  (a missing C++ toolchain and friends: recorded, not fatal)
            compiled[name] = {"error": f"{type(err).__name__}: {str(err)[:200]}"}
    result["torch_compile"] = compiled
    shutil.rmtree(cache, ignore_errors=True)
    return result


def readme_block(result: dict) -> str:
    """The README's figures, from the JSON."""
    lat, fid = result["latency"], result["fidelity"]
    h = lat["headline"]
    m = lat["models"]
    load = ", ".join(f"{x:.1f}" for x in lat["load_before"]["loadavg"])

    def ms(s: dict) -> str:
        return f"{1000 * s['median']:.1f}"

    def ratio(r: dict) -> str:
        return f"{r['median']:.1f}x [{r['q25']:.1f}, {r['q75']:.1f}]"

    lines = [
        f"Measured by `python benchmarks/fast_decode.py` ({result['command'].split('.py', 1)[1].strip() or 'defaults'}), "
        f"{lat['threads']} torch threads, {m[next(iter(m))]['end_to_end_s']['runs']} paired rounds, the jobs taking turns; "
        f"OMP_WAIT_POLICY={lat['load_before']['omp_wait_policy']}; the machine was shared with other jobs (load average {load} "
        "when it started), so absolute times are inflated and the paired ratios are the figures to read. Medians in ms, "
        "cold prompt / warm prompt:",
        "",
        "| model | decoder | text | denoise | decode | end to end | vs teacher-50 + full (paired) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in m.values():
        w = r["warm"]
        lines.append(
            f"| {r['spec']['label']} | {r['decoder']} | {ms(r['text_encoding_s'])} / {ms(w['text_encoding_s'])} | "
            f"{ms(r['denoising_s'])} / {ms(w['denoising_s'])} | {ms(r['decoding_s'])} / {ms(w['decoding_s'])} | "
            f"{ms(r['end_to_end_s'])} / {ms(w['end_to_end_s'])} | {ratio(r['speedup_end_to_end_paired'])} / {ratio(w['speedup_end_to_end_paired'])} |"
        )
    lines += [
        "",
        f"- Decoding: the tiny decoder is **{ratio(h['decode_speedup_full_over_tiny_paired'])}** faster than the full one "
        "(student-1's decoding seconds, per round; median [IQR]).",
        f"- student-1 + tiny decoder against the 50-step teacher + full decoder, end to end: **{ratio(h['student1_tiny_vs_teacher50_full_end_to_end_cold_paired'])}** "
        f"with a cold prompt, **{ratio(h['student1_tiny_vs_teacher50_full_end_to_end_warm_paired'])}** with a warm (cached) one "
        f"(student-1 with the full decoder, cold: {ratio(h['student1_full_vs_teacher50_full_end_to_end_cold_paired'])}).",
        f"- A cached prompt's text stage is {ratio(h['text_cold_over_warm_student1_paired'])} cheaper than encoding it.",
        "",
        f"Fidelity on the held-out prompts ({fid['prompts']} prompts: 64 unseen combinations and 16 two-object ones; seeds "
        f"{', '.join(map(str, fid['seeds']))}), each model's videos decoded by both decoders from the same latents "
        "(checker colour and motion, probe shape, in % of verdicts; delta in points):",
        "",
        "| model | tiny vs full PSNR (mean, worst) | colour full / tiny (delta) | motion full / tiny (delta) | shape full / tiny (delta) |",
        "|---|---|---|---|---|",
    ]
    for name, r in fid["models"].items():
        cells = [f"{r[k]['full']:.1f} / {r[k]['tiny']:.1f} ({r[k]['delta_points']:+.1f})" for k in ("colour", "motion", "shape")]
        p = r["psnr_tiny_vs_full_db"]
        lines.append(f"| {name} | {p['mean']:.1f} dB, {p['min']:.1f} dB | " + " | ".join(cells) + " |")
    text = result["text"]
    lines += [
        "",
        f"Where a cold prompt's text time goes (medians, ms, paired; {text['prompt_tokens']} tokens, states zero-padded to "
        f"{text['padded_to']}): tokenizer {text['tokenizer_ms']:.2f}; the encoder {text['encoder_no_grad_ms']:.1f} under no_grad, "
        f"{text['encoder_inference_mode_ms']:.1f} under inference_mode ({text['encoder_no_grad_over_encoder_inference_mode']:.2f}x); "
        f"`encode_text` cold {text['encode_text_cold_ms']:.1f}, warm (cached) {text['encode_text_warm_ms']:.2f}.",
    ]
    for name, c in result.get("torch_compile", {}).items():
        if "error" in c:
            lines.append(f"torch.compile of the {name.replace('_', ' ')}: failed ({c['error']}).")
            continue
        first = " and ".join(f"{x:.0f} s" for x in c["compile_s_per_shape"])
        even = f"it repays its compile time after {c['break_even_calls']:.0f} calls" if c["break_even_calls"] else "it saves nothing"
        verdict = "it pays" if c["pays"] else f"not within {COMPILE_PAYS_WITHIN_CALLS} calls, so it is not compiled"
        lines.append(
            f"torch.compile of the {name.replace('_', ' ')}: {c['compiled_ms']:.1f} ms a call against {c['eager_ms']:.1f} ms eager "
            f"(paired), after compiling for {first} (per input shape, empty compile cache): {even}; {verdict}."
        )
    return "\n".join(lines)


def write_readme(result: dict, path: str = os.path.join(ROOT, "README.md")) -> None:
    with open(path) as f:
        text = f.read()
    start, end = README_MARKERS
    if start not in text or end not in text:
        raise SystemExit(f"error: {path} has no {start} ... {end} block to fill.")
    head, rest = text.split(start, 1)
    with open(path, "w") as f:
        f.write(head + start + "\n" + readme_block(result) + "\n" + end + rest.split(end, 1)[1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--runs", type=int, default=30, help="paired timing rounds")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--models", nargs="+", default=["student-1", "student-4", "teacher"], help="models whose videos both decoders decode")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile measurement")
    p.add_argument("--out", default=os.path.join(RESULTS, "fast_decode.json"))
    p.add_argument("--readme-only", action="store_true", help="measure nothing: write README.md's figures from --out")
    args = p.parse_args(argv)
    if args.readme_only:
        with open(args.out) as f:
            write_readme(json.load(f))
        return 0
    quiet_command(args.threads)
    start = time.perf_counter()
    result = {"command": "python benchmarks/fast_decode.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    result["latency"] = latency(args.runs, args.warmup)
    result["fidelity"] = fidelity(args.models, args.seeds, batch_size=16)
    result.update(text_and_compile(not args.no_compile))
    result["wall_s"] = time.perf_counter() - start
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    if os.path.abspath(args.out) == os.path.abspath(os.path.join(RESULTS, "fast_decode.json")):
        write_readme(result)
    h = result["latency"]["headline"]
    print(
        f"decode {h['decode_speedup_full_over_tiny_paired']['median']:.1f}x faster; student-1 + tiny vs teacher-50 + full: "
        f"cold {h['student1_tiny_vs_teacher50_full_end_to_end_cold_paired']['median']:.1f}x, "
        f"warm {h['student1_tiny_vs_teacher50_full_end_to_end_warm_paired']['median']:.1f}x; wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
