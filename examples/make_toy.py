"""Write the toy "bring your own embeddings" example used by the README.

A stand-in for what an encoder would produce on the PU vibration dataset: 3 classes
(healthy, IR, OR), 8 bearings x working conditions (groups) per class, 5 files per group, 32-dim
embeddings = class direction + group offset + noise. Deterministic (seed 0):

    python examples/make_toy.py   # rewrites examples/toy_pu_vib/{meta.csv,emb.npz}
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "toy_pu_vib"


def main() -> None:
    rng = np.random.default_rng(0)
    rows, emb = ["file,label,group"], {}
    for label in ("healthy", "IR", "OR"):
        direction = rng.normal(size=32)
        for bearing in range(8):
            group = f"{label}_K{bearing:03d}_N15_M07_F10"
            offset = 0.8 * rng.normal(size=32)
            for i in range(1, 6):
                file = f"{group}_{i}_channel7.wav"
                rows.append(f"{file},{label},{group}")
                emb[file] = (direction + offset + 1.2 * rng.normal(size=32)).astype(np.float32)
    OUT.mkdir(exist_ok=True)
    (OUT / "meta.csv").write_text("\n".join(rows) + "\n")
    np.savez(OUT / "emb.npz", **emb)


if __name__ == "__main__":
    main()
