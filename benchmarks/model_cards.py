"""Write the model cards of the bundled teacher and VAE, and the README's measured section, from
the training logs and the measured results (benchmarks/results/foundation.json), so no number in
them is typed by hand (the writer is dollar/reports.py).

    python benchmarks/model_cards.py
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dollar.reports import write_foundation_cards  # noqa: E402

if __name__ == "__main__":
    write_foundation_cards()
    print("wrote assets/teacher/README.md, assets/teacher/vae/README.md and the README's measured section")
