"""Run by tests/test_ddp.py under `accelerate launch`: distil, then write this process's weight hash."""

import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "train"))

import distill  # noqa: E402

cfg = distill.parse_config(sys.argv[1:])
result = distill.main(cfg)
rank = int(os.environ.get("RANK", 0))  # set by accelerate launch (the trainer may have ended its state)
digest = hashlib.sha256()
for name, p in sorted(result["student"].state_dict().items()):
    digest.update(name.encode())
    digest.update(p.detach().cpu().contiguous().numpy().tobytes())
with open(os.path.join(cfg.output_dir, f"weights-rank{rank}.json"), "w") as f:
    json.dump({"rank": rank, "sha256": digest.hexdigest(), "iterations": result["iterations"]}, f)
