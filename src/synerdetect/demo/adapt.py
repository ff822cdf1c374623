"""``synerdetect demo --adapt``: one adaptation end to end on the demo benchmark.

The demo's checkpoint was trained on the seen family only. Here it learns one unseen family from 32 of its fakes
and 32 real images (written by the demo's own builder with another seed, from the training photographs), with
replay of the seen family's training images, and the report compares parent and adapted checkpoint on the demo's
test images of every family. It reuses the checkpoint and data of an earlier ``synerdetect demo`` run in the same
``--out`` folder, and runs that demo first when there is none.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

#: The family the demo adapts to, and how many of its fakes (and reals) it sees.
ADAPT_FAMILY = "diffusion_latent"
ADAPT_SHOTS = 32


def run_adapt_demo(out_dir: str | Path = "demo_out", *, progress: bool = True) -> int:
    from ..engine.adapt import STAMP, AdaptOptions, adapt
    from .run import SEEN, run_demo
    from .synthetic import build_demo_benchmark

    # 1. The parent: the checkpoint of an earlier demo run in this folder, or a fresh demo run.
    t0 = time.time()
    out = Path(out_dir)
    ckpt = out / "checkpoint"
    if not (ckpt / "calibration.json").is_file() or not (out / "data" / "test").is_dir():
        print(f"no demo checkpoint in {out}: running `synerdetect demo` first\n")
        run_demo(out, progress=progress)
        t0 = time.time()
    else:
        print(f"reusing the demo checkpoint {ckpt} and its benchmark in {out / 'data'}")

    # 2. The new generator's images: the demo builder's training photographs with another seed.
    new_root = out / "data" / "new"
    fam = (ADAPT_FAMILY,)
    build_demo_benchmark(
        new_root, size=64, n_train=ADAPT_SHOTS, n_test=1, train_families=fam, test_families=fam, seed=3
    )

    # 3. Adapt with replay of the seen family's training images; report on the test images of both families.
    folder = out / "adapt"
    if (folder / STAMP).is_file():
        shutil.rmtree(folder)  # the demo shows a fresh adaptation, not a resumed one (only its own folder)
    print(
        f"adapting to {ADAPT_FAMILY} from {ADAPT_SHOTS} fakes + {ADAPT_SHOTS} reals, replaying "
        f"{out / 'data' / 'train'} ..."
    )
    report = adapt(
        ckpt,
        new_root / "train",
        folder,
        replay=out / "data" / "train",
        options=AdaptOptions(shots=ADAPT_SHOTS, eval_sets=[str(out / "data" / "test" / g) for g in (*fam, *SEEN)]),
        progress=progress,
    )
    print("\n" + (folder / "adapt.md").read_text())
    print(f"adaptation demo: {time.time() - t0:.0f} s; adapted checkpoint {report['checkpoint']}")
    print(f"try: synerdetect predict {out}/data/test/{ADAPT_FAMILY}/1_fake --checkpoint {report['checkpoint']}")
    return 0
