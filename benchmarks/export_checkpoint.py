"""Export the encoder of one training checkpoint as a model folder (``load_model(OUT)``).

    python benchmarks/export_checkpoint.py runs/lite2-t1 200 runs/lite2-t1-step200

For evaluating a run part-way (the run folder itself gets its export only at the last step).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from stcorr.model import model_from_config
from stcorr.train.checkpoints import CHECKPOINT_DIR
from stcorr.train.temporal import student_encoder
from stcorr.train.presets import config_from_dict


def main(run: Path, step: int, out: Path) -> None:
    checkpoint = torch.load(run / CHECKPOINT_DIR / f"step_{step:08d}.pt", map_location="cpu", weights_only=True)
    train_config = json.loads((run / "train_config.json").read_text())
    train_config.pop("stage", None)
    encoder = student_encoder(config_from_dict(train_config))
    prefix = "encoder."
    encoder.load_state_dict({k[len(prefix):]: v for k, v in checkpoint["task"].items() if k.startswith(prefix)})
    model = model_from_config(encoder.config)
    model.load_state_dict(encoder.state_dict(), strict=True)
    model.save_pretrained(out)
    print(out)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))
