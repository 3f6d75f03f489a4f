"""A stand-in for a user's NVIDIA-style train.py, without torch: for external mode's failure paths.

    python tests/helpers/fake_train.py -o OUT [-c OUT/checkpoint_10] --hparams "learning_rate=1e-3,every=5,mode=ok"

Prints NVIDIA's ``Train loss <i> <loss> Grad Norm <g> <dt>s/it`` every iteration and
``Validation loss <i>: <loss>`` before saving ``checkpoint_<i>`` (a zip file, as torch.save
writes) every ``every`` iterations; resumes at the checkpoint's iteration + 1. ``mode``:
``ok``, ``nan@N`` (a NaN loss from iteration N on), ``exit@N`` (exit 3 at N), ``oom@N`` (dies
saying CUDA out of memory), ``hang@N`` (stops printing at N), ``nosave`` (never saves),
``resave`` (on SIGINT rewrites its last checkpoint in place, as Coqui's ``save_on_interrupt``
does, and is still writing it, half done, when the stop escalates);
``log_every`` (print every k-th iteration only), ``fmt=raw`` (checkpoints that are not zip files).
"""

from __future__ import annotations

import argparse
import sys
import time
import zipfile
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("-o", type=Path, required=True)
    p.add_argument("-c", type=Path)
    p.add_argument("--hparams", default="")
    args = p.parse_args()
    hp = dict(kv.split("=", 1) for kv in args.hparams.split(",") if kv)
    lr = float(hp.get("learning_rate", hp.get("lr", "1e-3")))  # "lr": a script with names of its own
    every, mode = int(hp.get("every", "5")), hp.get("mode", "ok")
    log_every, raw = int(hp.get("log_every", "1")), hp.get("fmt", "zip") == "raw"
    kind, _, at = mode.partition("@")
    at_step = int(at) if at else -1
    start = 0
    if args.c is not None:
        if zipfile.is_zipfile(args.c):
            with zipfile.ZipFile(args.c) as z:
                start = int(z.read("iteration")) + 1
        else:
            start = int(args.c.read_bytes().split(b"\n")[0]) + 1
    args.o.mkdir(parents=True, exist_ok=True)
    if kind == "resave":
        import signal

        def resave(*_: object) -> None:
            saved = sorted(args.o.glob("checkpoint_*"), key=lambda p: int(p.name.rsplit("_", 1)[1]))
            if saved:
                with open(saved[-1], "r+b") as f:  # in place, not atomically: truncated, then slow to finish
                    f.truncate(max(1, f.seek(0, 2) // 2))
            time.sleep(3600)

        signal.signal(signal.SIGINT, resave)
    i = start
    while True:
        if i == at_step and kind == "exit":
            print("Traceback: something went wrong", flush=True)
            return 3
        if i == at_step and kind == "oom":
            print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", flush=True)
            return 1
        if kind == "hang" and i >= at_step:
            time.sleep(3600)
        loss = float("nan") if kind == "nan" and i >= at_step else 5.0 / (1 + lr * 1000 * (i + 1))
        if i % log_every == 0:
            print(f"Train loss {i} {loss:.6f} Grad Norm 1.000000 0.01s/it", flush=True)
        if i % every == 0 and kind != "nosave":
            print(f"Validation loss {i}: {loss * 0.9:9f}  ", flush=True)
            if raw:  # not a zip: complete only once it stops changing
                (args.o / f"checkpoint_{i}").write_bytes(f"{i}\n".encode() + bytes(4096))
            else:
                with zipfile.ZipFile(args.o / f"checkpoint_{i}", "w") as z:
                    z.writestr("iteration", str(i))
                    z.writestr("weights", bytes(4096))
        i += 1
        time.sleep(0.02)


if __name__ == "__main__":
    sys.exit(main())
