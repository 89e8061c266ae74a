"""Run by tests/test_ddp.py and tests/test_fsdp.py under `accelerate launch`: distil, then write
what this process ended with to <output_dir>/weights-rank<r>.json (its losses, a hash of its
student, and how each network is held: sharded or whole).

Two switches, for tests only:
- DOLLAR_TEST_SAME_BATCH=1: every process draws the batch and noise of process 0. Averaging
  identical gradients gives the one-process gradient, so the run must reproduce a one-process run
  of the same batch size: any difference comes from how the networks are spread.
- DOLLAR_TEST_CPU_AS_GPUS=1: accelerate 1.15 turns FSDP on only for accelerator devices (its
  AcceleratorState leaves MULTI_CPU out), so the gloo group of CPU processes is presented to it
  as a multi-GPU one; the device stays the CPU (ACCELERATE_TORCH_DEVICE=cpu) and the trainer runs
  accelerate's own FSDP2 path, unchanged.
"""

import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "train"))

if os.environ.get("DOLLAR_TEST_CPU_AS_GPUS") == "1":
    import accelerate.state
    from accelerate.utils import DistributedType

    def cpus_as_gpus(self, cpu=False, sagemaker_dp=False, backend=None):
        return "gloo", DistributedType.MULTI_GPU

    accelerate.state.PartialState._prepare_backend = cpus_as_gpus

import distill  # noqa: E402

if os.environ.get("DOLLAR_TEST_SAME_BATCH") == "1":
    batch_generator = distill.batch_generator
    distill.batch_generator = lambda seed, iteration, process_index: batch_generator(seed, iteration, 0)


def held(module) -> dict:
    """How this process holds ``module``: its parameters' elements here and in the whole network."""
    from torch.distributed.tensor import DTensor

    params = list(module.parameters())
    local = sum(p.to_local().numel() if isinstance(p, DTensor) else p.numel() for p in params)
    return {"local": local, "whole": sum(p.numel() for p in params), "sharded": all(isinstance(p, DTensor) for p in params)}


cfg = distill.parse_config(sys.argv[1:])
result = distill.main(cfg)
rank = int(os.environ.get("RANK", 0))  # set by accelerate launch (the trainer has ended its state)
student = result["student"]
digest = hashlib.sha256()
for name, p in sorted(student.state_dict().items()):
    p = p.to_local() if hasattr(p, "to_local") else p  # a shard: the hash is this process's part
    digest.update(name.encode())
    digest.update(p.detach().cpu().contiguous().numpy().tobytes())
losses = [{k: v for k, v in r.items() if k.startswith(("loss_", "reward_"))} for r in result["history"]]
roles = {role: result[role] for role in ("teacher", "student", "fake", "ema", "reward_model")}
with open(os.path.join(cfg.output_dir, f"weights-rank{rank}.json"), "w") as f:
    json.dump(
        {
            "rank": rank,
            "sha256": digest.hexdigest(),
            "iterations": result["iterations"],
            "losses": losses,
            "held": {role: held(m) for role, m in roles.items()},
            "reward_model_wrapper": type(result["reward_model"]).__name__,
        },
        f,
    )
