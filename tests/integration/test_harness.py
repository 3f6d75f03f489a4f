"""The segment harness on the tiny model and corpus: hot, warm and cold changes, exact resume, checkpoints."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from smart_tuner.trainer import checkpoint as ckpt
from smart_tuner.trainer.config import TrainerConfig
from smart_tuner.trainer.fileio import sha256_file
from smart_tuner.trainer.harness import SegmentError, Trainer
from smart_tuner.trainer.hparams import preset
from smart_tuner.trainer.inplace import ColdChangeError

ROOT = Path(__file__).resolve().parents[2]


def make_trainer(data_dir: Path, out: Path, **overrides: object) -> Trainer:
    config = TrainerConfig(dataset="tiny", data_dir=data_dir, output_dir=out, val_count=4, val_batch_size=4, threads=1)
    return Trainer(config, preset("tiny").replace(**overrides))


@pytest.fixture
def trainer(tiny_data_dir: Path, tmp_path: Path) -> Trainer:
    return make_trainer(tiny_data_dir, tmp_path)


def test_hot_optimizer_and_module_changes_take_effect_and_training_continues(trainer: Trainer) -> None:
    trainer.train_step()
    applied = trainer.apply(
        {
            "learning_rate": 3e-3,
            "weight_decay": 1e-4,
            "adam_beta1": 0.8,
            "adam_eps": 1e-8,
            "p_attention_dropout": 0.3,
            "p_decoder_dropout": 0.25,
            "p_prenet_dropout": 0.4,
            "p_encoder_dropout": 0.2,
            "p_postnet_dropout": 0.1,
        }
    )
    assert set(applied.classes.values()) == {"hot"}
    group = trainer.optimizer.param_groups[0]
    assert (group["lr"], group["weight_decay"], group["betas"][0], group["eps"]) == (3e-3, 1e-4, 0.8, 1e-8)
    assert trainer.model.dropouts() == {
        "p_encoder_dropout": 0.2,
        "p_prenet_dropout": 0.4,
        "p_attention_dropout": 0.3,
        "p_decoder_dropout": 0.25,
        "p_postnet_dropout": 0.1,
    }
    step = trainer.step
    values = trainer.train_step()
    assert trainer.step == step + 1 and math.isfinite(values["train_loss"])
    assert trainer.optimizer.state[next(trainer.model.parameters())]["step"] == step + 1  # same optimizer, no reset


def test_hot_loss_weights_clip_and_teacher_forcing(trainer: Trainer) -> None:
    trainer.apply(
        {
            "guided_attn_weight": 5.0,
            "guided_attn_sigma": 0.2,
            "gate_loss_weight": 2.0,
            "grad_clip_thresh": 1e-3,
            "teacher_forcing_ratio": 0.5,
            "guided_attn_decay": 0.99,
        }
    )
    loss = trainer.loss
    assert (loss.guided_attn_weight, loss.guided_attn_sigma, loss.gate_loss_weight) == (5.0, 0.2, 2.0)
    trainer.train_step()
    clipped = torch.sqrt(sum((p.grad**2).sum() for p in trainer.model.parameters() if p.grad is not None))
    assert float(clipped) <= 1e-3 * 1.01  # the new threshold clipped this step's gradients
    assert loss.effective_guided_attn_weight == pytest.approx(5.0 * 0.99)
    assert trainer.hp.teacher_forcing_ratio == 0.5


def test_teacher_forcing_ratio_changes_what_the_decoder_is_fed(trainer: Trainer) -> None:
    batch = trainer.data.val_batches(trainer.hp.n_frames_per_step)[0]
    trainer.model.eval()
    torch.manual_seed(0)
    forced = trainer.model(batch.text, batch.text_lengths, batch.mel, 1.0).mel
    torch.manual_seed(0)
    free = trainer.model(batch.text, batch.text_lengths, batch.mel, 0.0).mel
    assert not torch.allclose(forced, free)


def test_warm_batch_size_change_continues_from_the_same_step(trainer: Trainer) -> None:
    for _ in range(2):
        trainer.train_step()
    position = trainer.stream.state_dict()
    applied = trainer.apply({"batch_size": 2, "scale_lr_with_batch": True})
    assert applied.classes["batch_size"] == "warm" and trainer.step == 2
    assert trainer.hp.learning_rate == pytest.approx(1e-3 * math.sqrt(2 / 4))  # sqrt rule, reported as a change
    assert applied.changes["learning_rate"][1] == pytest.approx(trainer.hp.learning_rate)
    assert trainer.stream.state_dict()["epoch"] == position["epoch"]
    trainer.train_step()
    assert trainer.step == 3


def test_warm_reduction_change_rebuilds_the_model_keeping_what_it_learned(trainer: Trainer) -> None:
    trainer.train_step()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.apply({"n_frames_per_step": 2})
    after = trainer.model.state_dict()
    assert trainer.model.r == 2 and after["decoder.projection.weight"].shape[0] == 2 * 24
    assert torch.equal(before["encoder.lstm.weight_ih_l0"], after["encoder.lstm.weight_ih_l0"])
    assert torch.equal(before["decoder.projection.weight"][:24], after["decoder.projection.weight"][:24])
    moved = trainer.optimizer.state[trainer.model.embedding.weight]
    assert int(moved["step"]) == 1  # Adam's moments came along for unchanged shapes
    trainer.train_step()
    assert trainer.step == 2


def test_cold_change_is_refused_and_changes_nothing(trainer: Trainer) -> None:
    with pytest.raises(ColdChangeError, match=r"n_mel_channels 24 -> 32"):
        trainer.apply({"n_mel_channels": 32, "learning_rate": 5e-3})
    assert trainer.hp.learning_rate == 1e-3 and trainer.optimizer.param_groups[0]["lr"] == 1e-3


def test_resume_in_a_fresh_process_is_exact(tiny_data_dir: Path, tmp_path: Path) -> None:
    def run(*args: str) -> dict[str, object]:
        proc = subprocess.run(
            [sys.executable, str(ROOT / "tests/helpers/segment_runner.py"), str(tiny_data_dir), str(tmp_path), *args],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]

    straight = run("straight", "6")
    first = run("first", "2")
    rest = run("rest", "4", str(first["checkpoint"]), str(first["sha256"]))
    assert rest["end_step"] == straight["end_step"] == 6
    a = ckpt.load(Path(str(straight["checkpoint"])))
    b = ckpt.load(Path(str(rest["checkpoint"])))
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert a["stream"] == b["stream"] and rest["val_objective"] == straight["val_objective"]


def test_segments_fork_from_checkpoints_and_keep_state_in_memory(trainer: Trainer) -> None:
    first = trainer.run_segment("s1", None, None, {"learning_rate": 3e-3}, steps=3, eval_every=2)
    assert first.end_step == 3 and len(first.evals) == 2 and first.alignment_png is not None
    assert first.alignment_png.read_bytes().startswith(b"\x89PNG")
    # beside it, the first validation utterance's target and predicted mels over its gate (the dashboard's panel)
    assert first.checkpoint.with_suffix(".tts.png").read_bytes().startswith(b"\x89PNG")
    assert sha256_file(first.checkpoint) == first.sha256
    assert set(first.metrics) >= {"val_objective", "val_loss", "diagonality", "focus_rate", "gate_accuracy"}
    free_running = {k: v for k, v in first.metrics.items() if k.startswith("fr_")}
    assert set(free_running) == {
        "fr_gate_stop_rate",
        "fr_length_ratio",
        "fr_mcd_dtw",
        "fr_diagonality",
        "fr_focus_rate",
    }
    assert 0 <= free_running["fr_gate_stop_rate"] <= 1 and 0 < free_running["fr_length_ratio"] <= 2.5
    assert free_running["fr_mcd_dtw"] > 0  # three steps in, nothing sounds like its reference yet
    a = trainer.run_segment("a", first.checkpoint, first.sha256, {"learning_rate": 1e-3}, steps=2)
    b = trainer.run_segment("b", first.checkpoint, first.sha256, {"learning_rate": 1e-2}, steps=2)
    assert a.start_step == b.start_step == 3 and a.end_step == b.end_step == 5
    assert b.applied.changes == {"learning_rate": (3e-3, 1e-2)}  # applied on top of the checkpoint's
    assert a.metrics["val_objective"] != b.metrics["val_objective"]


def test_damaged_or_tampered_checkpoints_are_refused(trainer: Trainer, tmp_path: Path) -> None:
    result = trainer.run_segment("s", None, None, {}, steps=1)
    data = result.checkpoint.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ckpt.CheckpointError, match="does not match"):
        trainer.load(truncated, result.sha256)
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0xFF
    result.checkpoint.write_bytes(bytes(flipped))
    with pytest.raises(ckpt.CheckpointError, match="does not match"):
        trainer.load(result.checkpoint, None)  # checked against the sidecar written with it
    with pytest.raises(ckpt.CheckpointError, match="cannot read"):
        trainer.load(tmp_path / "missing.pt", result.sha256)


def test_checkpoint_of_another_model_is_refused(tiny_data_dir: Path, tmp_path: Path) -> None:
    other = make_trainer(tiny_data_dir, tmp_path / "other", postnet_embedding_dim=8)
    result = other.run_segment("s", None, None, {}, steps=1)
    trainer = make_trainer(tiny_data_dir, tmp_path)
    with pytest.raises(ckpt.CheckpointError, match="another model"):
        trainer.load(result.checkpoint, result.sha256)


def test_nan_loss_fails_the_segment_with_its_step(trainer: Trainer) -> None:
    with pytest.raises(SegmentError) as info:
        trainer.run_segment("s", None, None, {"inject_nan_at_step": 2}, steps=4)
    assert info.value.reason == "nan" and info.value.step == 2


def test_abort_between_steps(trainer: Trainer) -> None:
    calls = []

    def should_abort() -> bool:
        calls.append(trainer.step)
        return trainer.step >= 2

    with pytest.raises(SegmentError) as info:
        trainer.run_segment("s", None, None, {}, steps=10, should_abort=should_abort)
    assert info.value.reason == "aborted" and trainer.step == 2


def test_mels_are_standardised_per_band_and_can_be_restored(trainer: Trainer) -> None:
    frames = torch.cat([mel for _, mel in trainer.data.train], dim=1)
    assert torch.allclose(frames.mean(dim=1), torch.zeros(24), atol=1e-4)
    assert torch.allclose(frames.std(dim=1), torch.ones(24), atol=1e-3)
    assert trainer.data.mel_mean is not None and float(trainer.data.mel_mean.mean()) < -1  # raw log-mels are negative
    restored = trainer.data.denormalize(trainer.data.val[0][1])
    assert float(restored.min()) >= -11.6  # back above the log floor of the raw features
    payload = trainer.payload()
    assert torch.equal(payload["mel_stats"]["std"], trainer.data.mel_std)


def test_free_running_synthesis_from_a_checkpoint_writes_audio(trainer: Trainer, tmp_path: Path) -> None:
    from smart_tuner.trainer.audio import read_wav
    from smart_tuner.trainer.synthesis import Synthesizer, main

    result = trainer.run_segment("s", None, None, {}, steps=1)
    synth = Synthesizer.from_checkpoint(result.checkpoint, result.sha256)
    sample = synth.synthesize("the red boat.", griffin_lim_iters=4)
    assert sample.mel.size(0) == 24 and sample.mel.size(1) <= 200 * 3
    assert torch.isfinite(sample.audio).all() and float(sample.audio.abs().max()) > 0
    out = tmp_path / "sample.wav"
    assert main([str(result.checkpoint), "the red boat.", str(out), "--iters", "2"]) == 0
    audio, rate = read_wav(out)
    assert rate == 22050 and len(audio) > 0
    assert main([str(tmp_path / "missing.pt"), "x", str(out)]) == 2


def test_out_of_memory_fails_the_segment_as_oom(trainer: Trainer, monkeypatch: pytest.MonkeyPatch) -> None:
    def cpu_oom() -> dict[str, float]:
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(trainer, "train_step", cpu_oom)
    with pytest.raises(SegmentError) as info:
        trainer.run_segment("s", None, None, {}, steps=2)
    assert info.value.reason == "oom" and info.value.step == 1

    def other() -> dict[str, float]:
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(trainer, "train_step", other)
    with pytest.raises(RuntimeError, match="shape mismatch"):  # not every RuntimeError is an OOM
        trainer.run_segment("s", None, None, {}, steps=2)


def test_every_validation_leaves_an_alignment_image(trainer: Trainer) -> None:
    result = trainer.run_segment("imgs", None, None, {}, steps=4, eval_every=2)
    assert result.checkpoint.with_suffix(".step2.alignment.png").read_bytes().startswith(b"\x89PNG")
    assert result.alignment_png is not None and result.alignment_png.exists()


def test_a_failed_segment_leaves_nothing_behind_for_the_next_one(tiny_data_dir: Path, tmp_path: Path) -> None:
    trainer = make_trainer(tiny_data_dir, tmp_path / "a")
    base = trainer.run_segment("base", None, None, {}, steps=2)
    with pytest.raises(SegmentError):  # fails mid-segment: the stream and weights moved on
        trainer.run_segment("bad", base.checkpoint, base.sha256, {"inject_nan_at_step": 4}, steps=3)
    retry = trainer.run_segment("retry", base.checkpoint, base.sha256, {}, steps=2)
    with pytest.raises(SegmentError):
        trainer.run_segment("bad2", None, None, {"learning_rate": 5e-3, "inject_nan_at_step": 1}, steps=1)
    fresh = trainer.run_segment("fresh", None, None, {}, steps=2)  # no leftover lr from the failed one
    assert fresh.applied.changes == {} and trainer.hp.learning_rate == 1e-3

    clean = make_trainer(tiny_data_dir, tmp_path / "b")
    expected = clean.run_segment("retry", base.checkpoint, base.sha256, {}, steps=2)
    a, b = ckpt.load(retry.checkpoint)["model"], ckpt.load(expected.checkpoint)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_measured_on_its_own_validation_utterances_gives_validation_s_numbers(
    trainer: Trainer, tmp_path: Path
) -> None:
    """The held-out evaluator (what benchmarks report as the test result) measures exactly as
    validation does: on the validation utterances themselves it gives the segment's metrics."""
    from smart_tuner.trainer.heldout import evaluate_checkpoint

    result = trainer.run_segment("s", None, None, {"ema_decay": 0.9}, steps=3)
    filelist = tmp_path / "val.txt"
    filelist.write_text("".join(f"{u.wav_path}|{u.text}\n" for u in trainer.data.val_utts), encoding="utf-8")
    mels = tmp_path / "mels"  # computed again from the same wavs
    heldout = evaluate_checkpoint(result.checkpoint, filelist, sha256=result.sha256, cache_dir=mels, batch_size=4)
    assert set(heldout) <= set(result.metrics) and "ema_fr_gate_stop_rate" in heldout
    for name in ("val_objective", "diagonality", "fr_gate_stop_rate", "fr_mcd_dtw", "ema_val_objective"):
        assert heldout[name] == pytest.approx(result.metrics[name], rel=1e-5), name


def test_the_heldout_command_prints_the_metrics_and_writes_listening_samples(
    trainer: Trainer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from smart_tuner.trainer.audio import read_wav
    from smart_tuner.trainer.heldout import main

    result = trainer.run_segment("s", None, None, {}, steps=2)
    filelist = tmp_path / "test.txt"
    filelist.write_text("".join(f"{u.wav_path}|{u.text}\n" for u in trainer.data.val_utts), encoding="utf-8")
    samples = tmp_path / "samples"
    assert main([str(result.checkpoint), str(filelist), "--samples", str(samples), "--cache-dir", str(tmp_path)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert 0 <= metrics["fr_gate_stop_rate"] <= 1 and metrics["val_objective"] > 0
    listing = json.loads((samples / "samples.json").read_text())
    assert [entry["wav"] for entry in listing] == [f"{u.id}.wav" for u in trainer.data.val_utts]
    for entry in listing:
        audio, rate = read_wav(samples / entry["wav"])
        assert rate == 22050 and len(audio) > 0 and entry["seconds"] > 0
    assert main([str(tmp_path / "missing.pt"), str(filelist)]) == 2
    assert "heldout: error: checkpoint" in capsys.readouterr().err
    assert main([str(result.checkpoint), str(tmp_path / "nothing-here")]) == 2
    assert "no such dataset" in capsys.readouterr().err


def test_held_out_evaluations_in_parallel_threads_measure_what_one_alone_does(trainer: Trainer, tmp_path: Path) -> None:
    """The prenet's dropout draws from the process's RNG: evaluations in threads (as the benchmark
    suite's run) must not interleave their draws."""
    from concurrent.futures import ThreadPoolExecutor

    from smart_tuner.trainer.heldout import evaluate_checkpoint

    result = trainer.run_segment("s", None, None, {}, steps=2)
    filelist = tmp_path / "test.txt"
    filelist.write_text("".join(f"{u.wav_path}|{u.text}\n" for u in trainer.data.val_utts), encoding="utf-8")

    def measure(_: int) -> dict[str, float]:
        return evaluate_checkpoint(result.checkpoint, filelist, cache_dir=tmp_path / "mels", batch_size=2)

    alone = measure(0)
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(measure, range(8)))
    assert all(t == alone for t in together)


def test_a_held_out_test_slice_is_never_trained_on_and_is_what_the_evaluator_measures(
    tiny_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``trainer.test_count``: utterances held out of training and validation, named to the evaluator by
    the same split arguments (``--held-out VAL,TEST,SEED``)."""
    from smart_tuner.trainer.data import held_out_slice, load_dataset
    from smart_tuner.trainer.heldout import main

    config = TrainerConfig(
        dataset="tiny", data_dir=tiny_data_dir, output_dir=tmp_path, val_count=4, val_batch_size=4, threads=1
    )
    plain = Trainer(config, preset("tiny"))
    held = Trainer(replace(config, test_count=3), preset("tiny"))
    corpus = load_dataset(tiny_data_dir / "tiny-corpus")
    test = held_out_slice(corpus, 4, 0, 3)
    ids = {u.id for u in test}
    assert len(ids) == 3 and not ids & {u.id for u in held.data.train_utts + held.data.val_utts}
    assert held.data.val_utts == plain.data.val_utts  # the selection set is the one it always was
    assert len(held.data.train_utts) == len(plain.data.train_utts) - 3
    assert held.data.dataset_id != plain.data.dataset_id

    result = held.run_segment("s", None, None, {}, steps=2)
    args = [str(result.checkpoint), "tiny", "--data-dir", str(tiny_data_dir), "--held-out", "4,3,0"]
    assert main([*args, "--json", str(tmp_path / "t.json"), "--threads", "1"]) == 0
    capsys.readouterr()
    doc = json.loads((tmp_path / "t.json").read_text())
    assert doc["n_sentences"] == 3 and doc["val_objective"] > 0
    assert main([*args[:-1], "4,oops"]) == 2
    assert "--held-out wants VAL,TEST,SEED" in capsys.readouterr().err
    assert main([*args[:-1], "4,500,0"]) == 2
    assert "must leave training utterances" in capsys.readouterr().err
