"""Runs one segment of the tiny model in a fresh process and prints the result as JSON (for resume tests).

python tests/helpers/segment_runner.py DATA_DIR OUT_DIR SEGMENT_ID STEPS [FROM_CHECKPOINT SHA256] [HPARAMS_JSON]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from smart_tuner.trainer.config import TrainerConfig
from smart_tuner.trainer.harness import Trainer
from smart_tuner.trainer.hparams import preset


def main() -> None:
    data_dir, out_dir, segment_id, steps = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    start = sys.argv[5] if len(sys.argv) > 5 and sys.argv[5] != "-" else None
    sha = sys.argv[6] if len(sys.argv) > 6 and sys.argv[6] != "-" else None
    hparams = json.loads(sys.argv[7]) if len(sys.argv) > 7 else {}
    config = TrainerConfig(
        dataset="tiny", data_dir=data_dir, output_dir=out_dir, val_count=4, val_batch_size=4, threads=1
    )
    trainer = Trainer(config, preset("tiny"))
    result = trainer.run_segment(segment_id, start, sha, hparams, steps, eval_every=0)
    print(
        json.dumps(
            {
                "checkpoint": str(result.checkpoint),
                "sha256": result.sha256,
                "end_step": result.end_step,
                "val_objective": result.metrics["val_objective"],
            }
        )
    )


if __name__ == "__main__":
    main()
