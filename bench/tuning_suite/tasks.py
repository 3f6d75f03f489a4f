"""The suite's tasks: the built-in ones, a user's own corpus, and each task's fixed split.

    task = BUILTIN["small"]                          # or parse_task("corpus=/data/my-lj,budget=800")
    data = materialise(task, work_dir)               # TaskData: the tuner's folder, the test folder

A task is a corpus, a model preset (with overrides), a batch size and a budget of training
steps. Its utterances are split once, by a fixed seed of the task's name, into a **test**
set and what the tuner may see; the trainer then holds out its own selection set
(``n_select``, its ``val_count``) from what it sees. The tuner and every peer decide on the
selection set; the suite reports on the test set, whose utterances are not even in the
folder the tuner is given. The split is written to ``split.json`` beside the two folders.

Imports the standard library, PyYAML and ``smart_tuner.trainer`` only.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import wave
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from smart_tuner.trainer.corpus import ensure_demo_corpus, make_prose_corpus, make_tiny_corpus
from smart_tuner.trainer.data import DatasetError, Utterance, load_dataset
from smart_tuner.trainer.hparams import PRESETS, preset

from .prose import docstring_sentences

VOICE = "en-gb-x-rp+f3"  # another accent (British RP) and a female variant of espeak-ng's voice
VOICE_RATE_WPM = 190  # the demo speaks at 160


class TaskError(ValueError):
    """A task that cannot be run; the message names the field and the value."""


@dataclass(frozen=True)
class Task:
    name: str
    corpus: str  # "demo", "voice", "tiny" or an LJSpeech folder / NVIDIA filelist
    preset: str = "demo"
    batch: int = 16
    budget: int = 600  # training steps per arm, every fork, probe and failed segment counted
    n_select: int = 16  # the trainer's validation (selection) set
    n_test: int = 32
    n_train: int | None = None  # None: every utterance left after the test and selection sets
    hparams: Mapping[str, Any] = field(default_factory=dict)  # over the preset (e.g. a larger model)
    note: str = ""

    def digest(self) -> str:
        """Names the task's data and settings: results of another definition are never mixed in."""
        plain = {k: v for k, v in asdict(self).items() if k != "note"}
        return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:10]


# The other tasks' model: the demo model at half its widths and five frames a decoder step
# (0.6 M parameters instead of 2.0 M). It is another model size for the tuner to meet, and it
# is what lets the four tasks fit the suite's time limits on two cores: one training step at
# batch 16 on one thread cost 0.39 s against the demo model's 0.90 (2026-12-07, this
# project's development machine, `bench/suite_cost.py`).
COMPACT_MODEL: dict[str, Any] = {
    "symbols_embedding_dim": 64,
    "encoder_embedding_dim": 64,
    "attention_rnn_dim": 128,
    "decoder_rnn_dim": 128,
    "prenet_dim": 64,
    "postnet_embedding_dim": 64,
    "n_frames_per_step": 5,
}

BUILTIN: dict[str, Task] = {
    "demo": Task(
        "demo",
        "demo",
        budget=400,
        note="the demo: bundled corpus (en-us, 160 wpm, templated sentences), the demo model (2.0 M parameters)",
    ),
    "voice": Task(
        "voice",
        "voice",
        budget=500,
        hparams=COMPACT_MODEL,
        note=f"another voice, rate and text: espeak-ng {VOICE} at {VOICE_RATE_WPM} wpm saying real sentences "
        "(the standard library's docstrings), the compact model (0.6 M parameters, r=5)",
    ),
    "small": Task(
        "small",
        "demo",
        n_train=70,
        budget=500,
        hparams=COMPACT_MODEL,
        note="70 training utterances (114 epochs in 500 steps): the regime where regularisation matters; "
        "the compact model",
    ),
    "large": Task(
        "large",
        "demo",
        batch=32,
        budget=1000,
        hparams=COMPACT_MODEL,
        note="twice the batch (32) and twice the budget (1000 steps) of the compact-model tasks: "
        "the learning rate's scale, short-horizon bias, the cool-down",
    ),
    "smoke": Task(
        "smoke",
        "tiny",
        preset="tiny",
        batch=4,
        budget=12,
        n_select=4,
        n_test=4,
        note="the instrument's own test: the tiny corpus and model, a dozen steps",
    ),
}
FULL = ("demo", "voice", "small", "large")

_INT_FIELDS = {"batch", "budget", "n_select", "n_test", "n_train"}


def parse_task(spec: str) -> Task:
    """``corpus=DIR,preset=demo,batch=16,budget=600[,name=…,n_test=…,n_select=…,n_train=…]``."""
    values: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not value:
            raise TaskError(f"--task {spec!r}: {part!r} is not key=value")
        values[key.strip()] = value.strip()
    return task_from_mapping(values, f"--task {spec!r}")


def task_from_mapping(values: Mapping[str, Any], where: str) -> Task:
    known = {f.name for f in fields(Task)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise TaskError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    if "corpus" not in values:
        raise TaskError(f"{where}: corpus= is required (an LJSpeech folder or a filelist)")
    out = dict(values)
    for key in _INT_FIELDS & set(out):
        try:
            out[key] = int(out[key])
        except (TypeError, ValueError):
            raise TaskError(f"{where}: {key} must be an integer, got {out[key]!r}") from None
        if out[key] < 1:
            raise TaskError(f"{where}: {key} must be at least 1, got {out[key]}")
    if out.get("preset", "demo") not in PRESETS:
        raise TaskError(f"{where}: preset {out['preset']!r} is not one of {', '.join(PRESETS)}")
    if not isinstance(out.get("hparams", {}), Mapping):
        raise TaskError(f"{where}: hparams must be a mapping")
    corpus = str(out["corpus"])
    out["corpus"] = corpus if corpus in {"demo", "voice", "tiny"} else str(Path(corpus).expanduser().absolute())
    out.setdefault("name", Path(corpus).name or "user")
    return Task(**out)


def tasks_from_file(path: Path) -> list[Task]:
    """A YAML file with one task mapping, or ``tasks:`` and a list of them."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise TaskError(f"{path}: cannot read the task file ({exc})") from None
    items = doc.get("tasks", [doc]) if isinstance(doc, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise TaskError(f"{path}: expected a task mapping or 'tasks:' with a list of mappings")
    return [task_from_mapping(item, f"{path} task {n + 1}") for n, item in enumerate(items)]


# --- data ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskData:
    task: Task
    tuner_dir: Path  # LJSpeech layout: what the tuner and the peers are given (training + selection)
    test_dir: Path  # LJSpeech layout: the test utterances, for reporting only
    n_visible: int
    n_test: int
    audio: Mapping[str, Any] = field(default_factory=dict)  # the corpus's own sample rate, when not the preset's


def corpus_audio(task: Task, utterances: list[Utterance]) -> dict[str, Any]:
    """A corpus at another sample rate than the preset's (16 or 24 kHz, say) is read at its own rate,
    with the mel band's top at most its Nyquist frequency: the hparams to add; {} when they match or
    the task sets the rate itself. TaskError when the files disagree or cannot be read."""
    if "sampling_rate" in task.hparams:
        return {}
    rates: dict[int, str] = {}
    for utt in utterances:
        try:
            with wave.open(str(utt.wav_path), "rb") as w:
                rates.setdefault(w.getframerate(), utt.id)
        except (OSError, wave.Error, EOFError) as exc:
            raise TaskError(f"task {task.name}: {utt.wav_path}: not a readable WAV ({exc})") from None
    if len(rates) > 1:
        seen = ", ".join(f"{rate} Hz ({uid})" for rate, uid in sorted(rates.items()))
        raise TaskError(f"task {task.name}: the corpus mixes sample rates: {seen}; resample it to one")
    (rate,) = rates
    hp = preset(task.preset)
    if rate == hp.sampling_rate:
        return {}
    return {"sampling_rate": rate, "mel_fmax": min(hp.mel_fmax, rate / 2)}


def _source(task: Task, work: Path) -> Path:
    if task.corpus == "demo":
        return ensure_demo_corpus()
    if task.corpus == "tiny":
        return make_tiny_corpus(work / "corpora" / "tiny-24", n_utterances=24)
    if task.corpus == "voice":
        sentences = docstring_sentences(300, seed=0)
        return make_prose_corpus(work / "corpora" / "voice-v1", sentences, VOICE, VOICE_RATE_WPM)
    return Path(task.corpus)


def _write_folder(folder: Path, utterances: list[Utterance]) -> None:
    """An LJSpeech folder of links to the source's wavs (nothing copied)."""
    (folder / "wavs").mkdir(parents=True, exist_ok=True)
    lines = []
    for utt in utterances:
        link = folder / "wavs" / f"{utt.id}.wav"
        if not link.exists():
            os.symlink(utt.wav_path.absolute(), link)
        lines.append(f"{utt.id}|{utt.text}\n")
    (folder / "metadata.csv").write_text("".join(lines), encoding="utf-8")


def materialise(task: Task, work: Path) -> TaskData:
    """Build (or reuse) the task's two folders under ``work/tasks``; TaskError if the corpus is too small."""
    try:
        utterances = load_dataset(_source(task, work))
    except DatasetError as exc:
        raise TaskError(f"task {task.name}: {exc}") from None
    order = list(range(len(utterances)))
    random.Random(f"split:{task.name}").shuffle(order)
    test = [utterances[i] for i in sorted(order[: task.n_test])]
    rest = order[task.n_test :]
    if task.n_train is not None:
        rest = rest[: task.n_train + task.n_select]
    visible = [utterances[i] for i in sorted(rest)]
    n_train = len(visible) - task.n_select
    if len(order) < task.n_test + task.n_select + 1 or n_train < task.batch:
        raise TaskError(
            f"task {task.name}: {len(utterances)} utterances leave {n_train} for training after "
            f"{task.n_test} test and {task.n_select} selection; a batch of {task.batch} needs at least that many"
        )
    folder = work / "tasks" / f"{task.name}-{task.digest()}"
    _write_folder(folder / "tuner", visible)
    _write_folder(folder / "test", test)
    split = {"task": asdict(task), "test": [u.id for u in test], "tuner": [u.id for u in visible]}
    audio = corpus_audio(task, utterances)
    split["audio"] = audio
    (folder / "split.json").write_text(json.dumps(split, indent=1, default=str) + "\n", encoding="utf-8")
    return TaskData(task, folder / "tuner", folder / "test", len(visible), len(test), audio)
