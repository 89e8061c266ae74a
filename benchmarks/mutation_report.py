"""Summarise a finished mutmut run (run from the folder that holds its ``mutants/``) as JSON.

Each survivor is written with its file, line and mutation (the original line and the mutated
one); those judged harmless carry the reason, from ``HARMLESS`` below (keyed by file and the
mutated line, so the reasons survive renumbered mutants). Used by benchmarks/mutation.sh.
"""

from __future__ import annotations

import argparse
import ast
import json
from collections import Counter
from pathlib import Path

from mutmut.mutation.diff_apply import get_diff_for_mutant
from mutmut.stats import status_by_exit_code
from mutmut.utils.file_utils import walk_mutatable_files

# (file, the mutated line as mutmut writes it, stripped) -> why the mutant is harmless.
HARMLESS: dict[tuple[str, str], str] = {
    (
        "dollar/sampling.py",
        "alpha_prev = torch.as_tensor(alpha_prev, dtype=None, device=x0.device)",
    ): "equivalent for float32 latents, which is what the Denoiser returns (float32 is also torch's default dtype)",
    (
        "dollar/sampling.py",
        "alpha_prev = torch.as_tensor(alpha_prev, device=x0.device)",
    ): "equivalent for float32 latents, which is what the Denoiser returns (float32 is also torch's default dtype)",
    (
        "dollar/sampling.py",
        "alpha_prev = torch.as_tensor(alpha_prev, dtype=x0.dtype, device=None)",
    ): "device placement only: the suite runs on CPU, where every tensor is already on the one device",
    (
        "dollar/sampling.py",
        "alpha_prev = torch.as_tensor(alpha_prev, dtype=x0.dtype, )",
    ): "device placement only: the suite runs on CPU, where every tensor is already on the one device",
    (
        "dollar/sampling.py",
        "sigma_prev = torch.as_tensor(sigma_prev, dtype=None, device=x0.device)",
    ): "equivalent for float32 latents, which is what the Denoiser returns (float32 is also torch's default dtype)",
    (
        "dollar/sampling.py",
        "sigma_prev = torch.as_tensor(sigma_prev, device=x0.device)",
    ): "equivalent for float32 latents, which is what the Denoiser returns (float32 is also torch's default dtype)",
    (
        "dollar/sampling.py",
        "sigma_prev = torch.as_tensor(sigma_prev, dtype=x0.dtype, device=None)",
    ): "device placement only: the suite runs on CPU, where every tensor is already on the one device",
    (
        "dollar/sampling.py",
        "sigma_prev = torch.as_tensor(sigma_prev, dtype=x0.dtype, )",
    ): "device placement only: the suite runs on CPU, where every tensor is already on the one device",
    ("dollar/denoiser.py", "raise ValueError(None)"): "error-message text only; the ValueError is still raised",
    (
        "dollar/denoiser.py",
        "t = torch.as_tensor(t, device=None)",
    ): "device placement only: the suite runs on CPU, where every tensor is already on the one device",
    (
        "dollar/denoiser.py",
        "t = torch.as_tensor(t, )",
    ): "device placement only: the suite runs on CPU, where every tensor is already on the one device",
    (
        "dollar/denoiser.py",
        "return t.expand(x.shape[0]) if (t.ndim == 0) or True else t",
    ): "equivalent: expanding a [B] timestep tensor to B gives it back",
    (
        "dollar/denoiser.py",
        "alpha, sigma = self.schedule.alpha_sigma(t, None)",
    ): "device only: _bcast moves alpha and sigma onto the sample's device anyway",
    (
        "dollar/denoiser.py",
        "alpha, sigma = self.schedule.alpha_sigma(t, )",
    ): "device only: _bcast moves alpha and sigma onto the sample's device anyway",
    (
        "dollar/denoiser.py",
        'if (isinstance(getattr(type(self.transformer), "dtype", None), property)) and False',
    ): "equivalent: a diffusers model's dtype property is its parameters' dtype, the fallback branch",
    (
        "dollar/schedule.py",
        "a = torch.as_tensor(a, device=None)",
    ): "device placement only: the suite runs on CPU, where every tensor is already on the one device",
    (
        "dollar/schedule.py",
        "a = torch.as_tensor(a, )",
    ): "device placement only: the suite runs on CPU, where every tensor is already on the one device",
    (
        "dollar/schedule.py",
        "alpha, sigma = schedule.alpha_sigma(t, None)",
    ): "device placement only: the suite runs on CPU, where every tensor is already on the one device",
    (
        "dollar/schedule.py",
        "alpha, sigma = schedule.alpha_sigma(t, )",
    ): "device placement only: the suite runs on CPU, where every tensor is already on the one device",
    (
        "dollar/schedule.py",
        "return x_t / _bcast(alpha + sigma, x_t), (NUM_TRAIN_TIMESTEPS * sigma / (alpha + sigma)).to(None)",
    ): "equivalent for float32 latents, which is what the Denoiser returns (float32 is also torch's default dtype)",
    ("dollar/schedule.py", "raise ValueError(None)"): "error-message text only; the ValueError is still raised",
    (
        "dollar/schedule.py",
        "alpha, sigma = self.alpha_sigma(t, None)",
    ): "device only: _bcast moves alpha and sigma onto the sample's device anyway",
    (
        "dollar/schedule.py",
        "alpha, sigma = self.alpha_sigma(t, )",
    ): "device only: _bcast moves alpha and sigma onto the sample's device anyway",
    (
        "dollar/schedule.py",
        "t = torch.as_tensor(t, device=None)",
    ): "device placement only: the suite runs on CPU, where every tensor is already on the one device",
    (
        "dollar/schedule.py",
        "t = torch.as_tensor(t, )",
    ): "device placement only: the suite runs on CPU, where every tensor is already on the one device",
    (
        "dollar/schedule.py",
        "s = (t.double() / self.num_train_timesteps).clamp(None, 1)",
    ): "defensive clamp for out-of-range timesteps; every grid and sample_timesteps stay inside [0, 1000]",
    (
        "dollar/schedule.py",
        "s = (t.double() / self.num_train_timesteps).clamp(0, None)",
    ): "defensive clamp for out-of-range timesteps; every grid and sample_timesteps stay inside [0, 1000]",
    (
        "dollar/schedule.py",
        "s = (t.double() / self.num_train_timesteps).clamp(0, )",
    ): "defensive clamp for out-of-range timesteps; every grid and sample_timesteps stay inside [0, 1000]",
    (
        "dollar/schedule.py",
        "s = (t.double() / self.num_train_timesteps).clamp(0, 2)",
    ): "defensive clamp for out-of-range timesteps; every grid and sample_timesteps stay inside [0, 1000]",
    (
        "dollar/schedule.py",
        "a = self.alphas_cumprod.to(None)[t.long()].float()  # float32 first, as the tests' references do",
    ): "device placement only: the suite runs on CPU, where every tensor is already on the one device",
    (
        "dollar/sampling.py",
        "noise = randn_tensor(x0.shape, generator=generator, device=None, dtype=x0.dtype)",
    ): "device placement only: the suite runs on CPU, where every tensor is already on the one device",
    (
        "dollar/sampling.py",
        "noise = randn_tensor(x0.shape, generator=generator, dtype=x0.dtype)",
    ): "device placement only: the suite runs on CPU, where every tensor is already on the one device",
    (
        "dollar/sampling.py",
        "noise = randn_tensor(x0.shape, generator=generator, device=x0.device, dtype=None)",
    ): "noise precision only: x0_hat comes out of the Denoiser in float32, the default dtype",
    (
        "dollar/sampling.py",
        "noise = randn_tensor(x0.shape, generator=generator, device=x0.device, )",
    ): "noise precision only: x0_hat comes out of the Denoiser in float32, the default dtype",
    (
        "dollar/sampling.py",
        "return schedule.add_noise(x0, noise, torch.full((x0.shape[0],), t_next, device=None))",
    ): "device placement only: the suite runs on CPU, where every tensor is already on the one device",
    (
        "dollar/sampling.py",
        "return schedule.add_noise(x0, noise, torch.full((x0.shape[0],), t_next, ))",
    ): "device placement only: the suite runs on CPU, where every tensor is already on the one device",
    (
        "dollar/sampling.py",
        "alpha, sigma = schedule.alpha_sigma(t.reshape(1), None)",
    ): "device only: _bcast moves alpha and sigma onto the sample's device anyway",
    (
        "dollar/sampling.py",
        "alpha, sigma = schedule.alpha_sigma(t.reshape(1), )",
    ): "device only: _bcast moves alpha and sigma onto the sample's device anyway",
    (
        "dollar/sampling.py",
        "x = scheduler.step(out, t, x, return_dict=None)[0]",
    ): "diffusers' output objects index like tuples ([0] is the sample), so return_dict changes nothing",
    (
        "dollar/sampling.py",
        "x = scheduler.step(out, t, x, )[0]",
    ): "diffusers' output objects index like tuples ([0] is the sample), so return_dict changes nothing",
    (
        "dollar/sampling.py",
        "x = scheduler.step(out, t, x, return_dict=True)[0]",
    ): "diffusers' output objects index like tuples ([0] is the sample), so return_dict changes nothing",
    (
        "dollar/denoiser.py",
        "t = self.schedule.sample_timesteps(x0.shape[0], generator, None)",
    ): "device placement only: the suite runs on CPU, where every tensor is already on the one device",
    (
        "dollar/denoiser.py",
        "t = self.schedule.sample_timesteps(x0.shape[0], generator, )",
    ): "device placement only: the suite runs on CPU, where every tensor is already on the one device",
    (
        "dollar/denoiser.py",
        "eps = torch.randn(x0.shape, generator=generator).to(None, x0.dtype)",
    ): "device placement only: the suite runs on CPU, where every tensor is already on the one device",
    (
        "dollar/denoiser.py",
        "eps = torch.randn(x0.shape, generator=generator).to(x0.dtype)",
    ): "equivalent: .to(dtype) alone is the same cast (device unchanged on CPU)",
    (
        "dollar/denoiser.py",
        "eps = torch.randn(x0.shape, generator=generator).to(x0.device, None)",
    ): "noise precision only: x_t is cast to the network's dtype and the target is built in float32 from the same eps",
    (
        "dollar/denoiser.py",
        "eps = torch.randn(x0.shape, generator=generator).to(x0.device, )",
    ): "noise precision only: x_t is cast to the network's dtype and the target is built in float32 from the same eps",
    (
        "dollar/denoiser.py",
        "alpha, sigma = self.schedule.alpha_sigma(self._timesteps(t, x0), None)",
    ): "device only: _bcast moves alpha and sigma onto the sample's device anyway",
    (
        "dollar/denoiser.py",
        "alpha, sigma = self.schedule.alpha_sigma(self._timesteps(t, x0), )",
    ): "device only: _bcast moves alpha and sigma onto the sample's device anyway",
    (
        "dollar/schedule.py",
        "betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=None)",
    ): "precision only: float32 betas give alpha-bar within 1e-6 of float64 (the tests compare with diffusers at that tolerance)",
    (
        "dollar/schedule.py",
        "betas = torch.linspace(beta_start, beta_end, num_train_timesteps, )",
    ): "precision only: float32 betas give alpha-bar within 1e-6 of float64 (the tests compare with diffusers at that tolerance)",
    (
        "dollar/schedule.py",
        "s = shift_sigmas(torch.linspace(1.0, 0.0, num_steps + 1, dtype=None)[:-1], self.shift)",
    ): "precision only: a float32 flow grid differs from float64 by < 1e-4 timesteps",
    (
        "dollar/schedule.py",
        "s = shift_sigmas(torch.linspace(1.0, 0.0, num_steps + 1, )[:-1], self.shift)",
    ): "precision only: a float32 flow grid differs from float64 by < 1e-4 timesteps",
    (
        "dollar/schedule.py",
        "u = t_range[0] + (t_range[1] - t_range[0]) * torch.rand(batch, generator=generator, dtype=None)",
    ): "precision only: a float32 uniform draw has the same law at 2^-24 resolution",
    (
        "dollar/schedule.py",
        "u = t_range[0] + (t_range[1] - t_range[0]) * torch.rand(batch, generator=generator, )",
    ): "precision only: a float32 uniform draw has the same law at 2^-24 resolution",
    (
        "dollar/schedule.py",
        "return (u * n).long().clamp(0, n - 1).to(None)",
    ): "device placement only: the suite runs on CPU, where every tensor is already on the one device",
    ("dollar/schedule.py", "return (u * n).long().clamp(None, n - 1).to(device)"): "equivalent: u >= 0, so the lower clamp never binds",
    (
        "dollar/schedule.py",
        "return (u * n).long().clamp(0, None).to(device)",
    ): "equivalent: u < 1, so (u n).long() <= n - 1 and the upper clamp never binds",
    (
        "dollar/schedule.py",
        "return (u * n).long().clamp(0, ).to(device)",
    ): "equivalent: u < 1, so (u n).long() <= n - 1 and the upper clamp never binds",
    (
        "dollar/schedule.py",
        "return (u * n).long().clamp(0, n + 1).to(device)",
    ): "equivalent: u < 1, so (u n).long() <= n - 1 and the upper clamp never binds",
    (
        "dollar/schedule.py",
        "return (shift_sigmas(u, self.shift) * self.num_train_timesteps).float().to(None)",
    ): "device placement only: the suite runs on CPU, where every tensor is already on the one device",
    (
        "dollar/losses.py",
        "t = torch.randint(0, as_schedule(schedule).num_train_timesteps, (b,), generator=generator).to(None)",
    ): "device placement only: the suite runs on CPU, where every tensor is already on the one device",
    (
        "dollar/losses.py",
        "t = torch.randint(as_schedule(schedule).num_train_timesteps, (b,), generator=generator).to(x0.device)",
    ): "equivalent: torch.randint(high, size) draws from [0, high), the same as randint(0, high, size)",
    (
        "dollar/losses.py",
        "eps = torch.randn(x0.shape, generator=generator).to(None, x0.dtype)",
    ): "device placement only: the suite runs on CPU, where every tensor is already on the one device",
    (
        "dollar/losses.py",
        "eps = torch.randn(x0.shape, generator=generator).to(x0.dtype)",
    ): "equivalent: .to(dtype) alone is the same cast (device unchanged on CPU)",
    (
        "dollar/losses.py",
        "eps = torch.randn(x0.shape, generator=generator).to(x0.device, None)",
    ): "noise precision only: x_t is cast to the network's dtype before the call",
    (
        "dollar/losses.py",
        "eps = torch.randn(x0.shape, generator=generator).to(x0.device, )",
    ): "noise precision only: x_t is cast to the network's dtype before the call",
    (
        "dollar/losses.py",
        "v = transformer(x_t.to(dtype), t, encoder_hidden_states.to(dtype), return_dict=None)[0]",
    ): "diffusers' output objects index like tuples ([0] is the sample), so return_dict changes nothing",
    (
        "dollar/losses.py",
        "v = transformer(x_t.to(dtype), t, encoder_hidden_states.to(dtype), )[0]",
    ): "diffusers' output objects index like tuples ([0] is the sample), so return_dict changes nothing",
    (
        "dollar/losses.py",
        "v = transformer(x_t.to(dtype), t, encoder_hidden_states.to(dtype), return_dict=True)[0]",
    ): "diffusers' output objects index like tuples ([0] is the sample), so return_dict changes nothing",
    (
        "dollar/losses.py",
        "index = int(torch.randint(len(grid) - m + 1, (1,), generator=generator))",
    ): "equivalent: torch.randint(high, size) draws from [0, high), the same as randint(0, high, size)",
    (
        "dollar/losses.py",
        "t_start = torch.full((b,), grid[index], device=None)",
    ): "device placement only: the suite runs on CPU, where every tensor is already on the one device",
    (
        "dollar/losses.py",
        "t_start = torch.full((b,), grid[index], )",
    ): "device placement only: the suite runs on CPU, where every tensor is already on the one device",
    (
        "dollar/losses.py",
        "t_end = torch.full((b,), grid[index + m], device=None)",
    ): "device placement only: the suite runs on CPU, where every tensor is already on the one device",
    (
        "dollar/losses.py",
        "t_end = torch.full((b,), grid[index + m], )",
    ): "device placement only: the suite runs on CPU, where every tensor is already on the one device",
    (
        "dollar/losses.py",
        "t = schedule.sample_timesteps(b, generator, None, t_range)",
    ): "device placement only: the suite runs on CPU, where every tensor is already on the one device",
    (
        "dollar/losses.py",
        "eps = torch.randn(x.shape, generator=generator).to(None, x.dtype)",
    ): "device placement only: the suite runs on CPU, where every tensor is already on the one device",
    (
        "dollar/losses.py",
        "eps = torch.randn(x.shape, generator=generator).to(x.dtype)",
    ): "equivalent: .to(dtype) alone is the same cast (device unchanged on CPU)",
    (
        "dollar/losses.py",
        "return c_skip.view(shape).to(None) * x_t + c_out.view(shape).to(x_t) * x0_hat",
    ): "equivalent for float32 latents (the scalings are float32); other dtypes are caught by the c_out cast test",
}


def _mutation(diff: str) -> tuple[str, str]:
    """(original line, mutated line) of a one-line mutation, from mutmut's function diff."""
    lines = diff.splitlines()
    removed = [line[1:] for line in lines if line.startswith("-") and not line.startswith("---")]
    added = [line[1:] for line in lines if line.startswith("+") and not line.startswith("+++")]
    return "\n".join(r.strip() for r in removed), "\n".join(a.strip() for a in added)


def _function_span(source: str, qualified: str) -> tuple[int, int]:
    """Line span of ``function`` or ``Class.method`` in ``source``."""
    parts = qualified.split(".")
    body = ast.parse(source).body
    node = None
    for part in parts:
        node = next(n for n in body if isinstance(n, ast.FunctionDef | ast.ClassDef) and n.name == part)
        body = node.body
    return node.lineno, node.end_lineno


def _line_of(source: str, qualified: str, original: str) -> int | None:
    first = original.splitlines()[0] if original else ""
    start, end = _function_span(source, qualified)
    for number in range(start, end + 1):
        if source.splitlines()[number - 1].strip() == first:
            return number
    return None


def _qualified_name(key: str) -> str:
    """``dollar.schedule.xǁNoiseScheduleǁgrid__mutmut_3`` -> ``NoiseSchedule.grid``."""
    name = key.rsplit("__mutmut_", 1)[0].rsplit(".", 1)[1]
    return ".".join(p for p in name[1:].split("ǁ") if p) if name.startswith("xǁ") else name[2:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--command", default="bash benchmarks/mutation.sh")
    args = parser.parse_args()
    from mutmut.__main__ import SourceFileMutationData

    counts: Counter[str] = Counter()
    survivors, per_file = [], {}
    for path in walk_mutatable_files():
        data = SourceFileMutationData(path=path)
        data.load()
        source = Path(path).read_text()
        file_counts = Counter(status_by_exit_code[code] for code in data.exit_code_by_key.values())
        per_file[str(path)] = dict(file_counts)
        counts.update(file_counts)
        for key, code in sorted(
            data.exit_code_by_key.items(), key=lambda kv: (kv[0].rsplit("__mutmut_", 1)[0], int(kv[0].rsplit("_", 1)[1]))
        ):
            status = status_by_exit_code[code]
            if status in ("killed", "caught by type check"):
                continue
            original, mutated = _mutation(get_diff_for_mutant(key, path=path))
            qualified = _qualified_name(key)
            entry = {
                "mutant": key,
                "status": status,
                "file": str(path),
                "function": qualified,
                "line": _line_of(source, qualified, original),
                "original": original,
                "mutated": mutated,
            }
            reason = HARMLESS.get((str(path), mutated))
            if reason:
                entry["harmless"] = reason
            survivors.append(entry)
    total = sum(counts.values())
    killed = counts["killed"] + counts["caught by type check"]
    harmless = sum("harmless" in s for s in survivors)
    report = {
        "tool": "mutmut",
        "command": args.command,
        "files": sorted(per_file),
        "mutants": total,
        "killed": killed,
        "survived": counts["survived"],
        "no_tests": counts["no tests"],
        "timeout": counts["timeout"],
        "other": total - killed - counts["survived"] - counts["no tests"] - counts["timeout"],
        "score": round(killed / total, 4) if total else None,
        "survivors_judged_harmless": harmless,
        "score_without_harmless": round(killed / (total - harmless), 4) if total - harmless else None,
        "by_file": per_file,
        "survivors": survivors,
    }
    Path(args.out).write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    print(f"mutation score {killed}/{total} = {report['score']:.1%}; {len(survivors)} not killed, {harmless} of them judged harmless")


if __name__ == "__main__":
    main()
