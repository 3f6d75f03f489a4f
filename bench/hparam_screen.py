"""Which hyperparameters besides the learning rate move the demo's objective? A screen from one checkpoint.

    python bench/hparam_screen.py [--base-steps 150] [--steps 150] [--lr 3e-3] [--parallel 2]
    python bench/hparam_screen.py --variants '{"no_rnn_dropout": {"p_attention_dropout": 0, "p_decoder_dropout": 0}}'

The demo model first trains ``--base-steps`` steps from scratch at ``--lr`` (one process, one
thread); every variant then continues from that checkpoint for ``--steps`` steps with the same
learning rate and one change (one process each, ``--parallel`` at a time), exactly as a fork of
the tuner would. The table gives each variant's unweighted validation objective (mel after
postnet + gate; the averaged weights' when ``ema_decay`` > 0, as the tuner compares them),
diagonality and training objective (last 10 steps) at the end, and its ratio to the unchanged continuation
(``base``). A lever worth a place in the default search space shows a ratio well below 1 here;
seed noise on this corpus is about 2 % of the objective (bench/lr_effect.py, 3 seeds).

Ends with ``RESULT <variant>=<ratio to base> … base_val=…``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

CHILD = """
import json, sys
from pathlib import Path
from smart_tuner.trainer.config import TrainerConfig
from smart_tuner.trainer.harness import Trainer
from smart_tuner.trainer.hparams import preset
args = json.loads(sys.argv[1])
trainer = Trainer(TrainerConfig(dataset="demo", output_dir=Path(args["out"]), threads=1),
                  preset("demo").replace(seed=args["seed"]))
last = {}
def report(step, metrics):
    if "train_objective" in metrics:
        last["train_objective"] = metrics["train_objective"]
result = trainer.run_segment(args["name"], args["ckpt"], args["sha"], args["hparams"], args["steps"],
                             report_every=10, report=report)
print(json.dumps({"metrics": {**result.metrics, **last}, "checkpoint": str(result.checkpoint), "sha256": result.sha256,
                  "step": result.end_step, "seconds": result.duration_s}))
"""

VARIANTS: dict[str, dict[str, Any]] = {
    "base": {},
    "no_rnn_dropout": {"p_attention_dropout": 0.0, "p_decoder_dropout": 0.0},
    "conv_dropout_0.2": {"p_encoder_dropout": 0.2, "p_postnet_dropout": 0.2},
    "beta2_0.98": {"adam_beta2": 0.98},
    "guided_0.1": {"guided_attn_weight": 0.1},
    "clip_10": {"grad_clip_thresh": 10.0},
    "ema_0.95": {"ema_decay": 0.95},
}


def run_child(args: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True, timeout=7200)
    if proc.returncode != 0:
        raise SystemExit(f"{args['name']} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def objective(metrics: dict[str, float]) -> float:
    return metrics.get("ema_val_objective", metrics["val_objective"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-steps", type=int, default=150)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--variants", default=None, help="JSON {name: {hparam: value}}; 'base' is always added")
    args = parser.parse_args()
    variants = dict(VARIANTS) if args.variants is None else {"base": {}, **json.loads(args.variants)}
    out = Path(tempfile.mkdtemp(prefix="st-screen-"))
    common = {"out": str(out), "seed": args.seed}
    base = run_child(
        {
            **common,
            "name": "start",
            "ckpt": None,
            "sha": None,
            "hparams": {"learning_rate": args.lr},
            "steps": args.base_steps,
        }
    )
    print(
        f"start: step {base['step']}, objective {objective(base['metrics']):.4f}, "
        f"diagonality {base['metrics']['diagonality']:.3f} ({base['seconds']:.0f} s)",
        flush=True,
    )

    def fork(item: tuple[str, dict[str, Any]]) -> dict[str, Any]:
        name, change = item
        return run_child(
            {
                **common,
                "name": name,
                "ckpt": base["checkpoint"],
                "sha": base["sha256"],
                "hparams": {"learning_rate": args.lr, **change},
                "steps": args.steps,
            }
        )

    with ThreadPoolExecutor(args.parallel) as pool:
        results = dict(zip(variants, pool.map(fork, variants.items()), strict=True))
    base_val = objective(results["base"]["metrics"])
    print(f"{'variant':<20} {'objective':>9} {'ratio':>6} {'diag':>6} {'train':>7}  change")
    fields = []
    for name, res in results.items():
        m = res["metrics"]
        ratio = objective(m) / base_val
        print(
            f"{name:<20} {objective(m):>9.4f} {ratio:>6.3f} {m['diagonality']:>6.3f} "
            f"{m.get('train_objective', float('nan')):>7.4f}  {json.dumps(variants[name])}"
        )
        if name != "base":
            fields.append(f"{name}={ratio:.3f}")
    print("RESULT " + " ".join(fields) + f" base_val={base_val:.4f}")


if __name__ == "__main__":
    main()
