"""Data pipeline: dataset parsing and its errors, split, mel cache, collate, resumable BatchStream."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from smart_tuner.trainer.audio import AudioConfig, AudioError, save_wav
from smart_tuner.trainer.data import (
    Batch,
    BatchStream,
    DatasetError,
    MelCache,
    TTSDataset,
    Utterance,
    collate,
    held_out_slice,
    load_dataset,
    load_filelist,
    load_ljspeech,
    split,
)
from smart_tuner.trainer.text import text_to_ids

CFG = AudioConfig()


def _wav(path: Path, seconds: float = 0.1, freq_hz: float = 440.0, rate: int = 22050) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    save_wav(path, 0.3 * np.sin(2 * np.pi * freq_hz * t), rate)
    return path


def _ljspeech(root: Path, lines: list[str], wav_ids: list[str] | None = None) -> Path:
    ids = wav_ids if wav_ids is not None else [line.split("|")[0] for line in lines if line]
    for utt_id in ids:
        _wav(root / "wavs" / f"{utt_id}.wav")
    (root / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


# --- parsing ---------------------------------------------------------------------------


def test_load_ljspeech_prefers_the_normalised_column(tmp_path: Path) -> None:
    root = _ljspeech(tmp_path, ["a1|Raw 1 text|Dr. Who, 2 times", "", "a2|Only raw, 3 words|", "a3|Two fields"])
    utts = load_ljspeech(root)
    assert [u.id for u in utts] == ["a1", "a2", "a3"]
    assert [u.text for u in utts] == ["doctor who, two times", "only raw, three words", "two fields"]
    assert utts[0].wav_path == root / "wavs" / "a1.wav"
    assert load_dataset(root) == utts


@pytest.mark.parametrize(
    ("lines", "wav_ids", "line_no", "message"),
    [
        (["a|ok|ok", "b|too|many|fields"], None, 2, "expected 'id|text|normalized', found 4 fields"),
        (["a|ok|ok", "no separator"], ["a"], 2, "found 1 fields"),
        (["a|ok|ok", "b| |"], None, 2, "empty text"),
        (["a|ok|ok", "b|fine|fine"], ["a"], 2, "b.wav does not exist"),
        (["a|ok|ok", "", "a|again|again"], None, 3, "duplicate id 'a' (first at"),
        (["a|price @ noon|"], None, 1, "character '@' (position 6"),
        (["|text|text"], [], 1, "empty id"),
    ],
    ids=["fields", "one-field", "empty-text", "missing-wav", "duplicate", "unknown-symbol", "empty-id"],
)
def test_ljspeech_errors_name_file_and_line(
    tmp_path: Path, lines: list[str], wav_ids: list[str] | None, line_no: int, message: str
) -> None:
    root = _ljspeech(tmp_path, lines, wav_ids)
    with pytest.raises(DatasetError) as info:
        load_ljspeech(root)
    assert str(info.value).startswith(f"{root / 'metadata.csv'}:{line_no}: ")
    assert message in str(info.value)


def test_ljspeech_missing_or_empty_metadata(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"metadata\.csv: no such file"):
        load_ljspeech(tmp_path)
    (tmp_path / "metadata.csv").write_text("\n\n")
    with pytest.raises(DatasetError, match=r"metadata\.csv: no utterances"):
        load_ljspeech(tmp_path)
    (tmp_path / "metadata.csv").write_bytes(b"a|\xff\xfe|x\n")
    with pytest.raises(DatasetError, match=r"metadata\.csv: not UTF-8"):
        load_ljspeech(tmp_path)


def test_load_filelist_resolves_relative_paths(tmp_path: Path) -> None:
    _wav(tmp_path / "lists" / "wavs" / "x.wav")
    absolute = _wav(tmp_path / "elsewhere" / "y.wav")
    filelist = tmp_path / "lists" / "train.txt"
    filelist.write_text(f"wavs/x.wav|Hello there.\n{absolute}|It's 5 o'clock!\n")
    utts = load_filelist(filelist)
    assert utts == [
        Utterance("x", "hello there.", tmp_path / "lists" / "wavs" / "x.wav"),
        Utterance("y", "it's five o'clock!", absolute),
    ]
    assert load_dataset(filelist) == utts
    _wav(tmp_path / "root" / "wavs" / "x.wav")
    assert load_filelist(filelist, root=tmp_path / "root")[0].wav_path == tmp_path / "root" / "wavs" / "x.wav"


@pytest.mark.parametrize(
    ("content", "line_no", "message"),
    [
        ("wavs/x.wav|ok\nwavs/x.wav|speaker|text\n", 2, "expected 'wav_path|text', found 3 fields"),
        ("wavs/x.wav|ok\n|text\n", 2, "empty wav path"),
        ("wavs/x.wav|\n", 1, "empty text"),
        ("wavs/x.wav|ok\nwavs/gone.wav|ok\n", 2, "gone.wav does not exist"),
        ("wavs/x.wav|ok\n\nwavs/x.wav|again\n", 3, "duplicate id 'x'"),
        ("wavs/x.wav|caf\u00e9 \u6771\u4eac\n", 1, "character '\u6771' (position 5"),
    ],
    ids=["fields", "empty-path", "empty-text", "missing-wav", "duplicate", "unknown-symbol"],
)
def test_filelist_errors_name_file_and_line(tmp_path: Path, content: str, line_no: int, message: str) -> None:
    _wav(tmp_path / "wavs" / "x.wav")
    filelist = tmp_path / "list.txt"
    filelist.write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError) as info:
        load_filelist(filelist)
    assert str(info.value).startswith(f"{filelist}:{line_no}: ") and message in str(info.value)


def test_load_dataset_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"needs a metadata\.csv"):
        load_dataset(tmp_path)
    with pytest.raises(DatasetError, match="no such dataset"):
        load_dataset(tmp_path / "missing")


def test_split_is_deterministic_and_disjoint() -> None:
    utts = [Utterance(f"u{i}", "a", Path(f"{i}.wav")) for i in range(20)]
    train, val = split(utts, 4, seed=1)
    assert (train, val) == split(utts, 4, seed=1)
    assert len(val) == 4 and sorted(train + val, key=utts.index) == utts
    assert train == sorted(train, key=utts.index)  # input order kept
    assert {u.id for u in val} != {u.id for u in split(utts, 4, seed=2)[1]}
    with pytest.raises(ValueError, match=r"val_count must lie in \[0, 20\)"):
        split(utts, 20, seed=0)


# --- features --------------------------------------------------------------------------


def test_mel_cache_computes_once_and_keys_by_audio_config(tmp_path: Path) -> None:
    utt = Utterance("u1", "a", _wav(tmp_path / "u1.wav", seconds=0.5))
    cache = MelCache(tmp_path / "cache", CFG)
    mel = cache.get(utt)
    assert mel.shape == (80, 1 + int(0.5 * 22050) // 256) and mel.dtype == torch.float32
    stored = tmp_path / "cache" / CFG.key() / "u1.npy"
    assert cache.path_for(utt) == stored and np.array_equal(np.load(stored), mel.numpy())
    np.save(stored, np.zeros((80, 3), dtype=np.float32))  # a planted value proves the file is read
    os.utime(utt.wav_path, ns=(1, 1))
    assert cache.get(utt).shape == (80, 3)
    other = MelCache(tmp_path / "cache", dataclasses.replace(CFG, n_mel_channels=40))
    assert other.get(utt).shape[0] == 40 and other.dir != cache.dir


def test_mel_cache_recomputes_when_the_wav_is_newer(tmp_path: Path) -> None:
    utt = Utterance("u1", "a", _wav(tmp_path / "u1.wav", seconds=0.2))
    cache = MelCache(tmp_path / "cache", CFG)
    first = cache.get(utt)
    _wav(utt.wav_path, seconds=0.4)
    stat = cache.path_for(utt).stat()
    os.utime(utt.wav_path, ns=(stat.st_mtime_ns + 10**9, stat.st_mtime_ns + 10**9))
    assert cache.get(utt).shape[1] > first.shape[1]


def test_mel_cache_warm_and_wrong_rate(tmp_path: Path) -> None:
    good = [Utterance(f"g{i}", "a", _wav(tmp_path / f"g{i}.wav")) for i in range(3)]
    cache = MelCache(tmp_path / "cache", CFG)
    cache.warm(good)
    assert sorted(p.name for p in cache.dir.iterdir()) == ["g0.npy", "g1.npy", "g2.npy"]
    bad = Utterance("b", "a", _wav(tmp_path / "b.wav", rate=16000))
    with pytest.raises(AudioError, match=r"b\.wav: sample rate is 16000 Hz"):
        cache.get(bad)


def test_dataset_items(tmp_path: Path) -> None:
    utts = [Utterance("a", "hi there", _wav(tmp_path / "a.wav")), Utterance("b", "yo", _wav(tmp_path / "b.wav"))]
    dataset = TTSDataset(utts, MelCache(tmp_path / "cache", CFG))
    text, mel = dataset[0]
    assert len(dataset) == 2 and text.dtype == torch.long and text.tolist() == text_to_ids("hi there")
    assert mel.dtype == torch.float32 and mel.shape[0] == 80


# --- batches ---------------------------------------------------------------------------


def _item(n_text: int, n_frames: int, fill: float) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.arange(1, n_text + 1), torch.full((80, n_frames), fill)


def test_collate_sorts_pads_and_sets_the_gate() -> None:
    items = [_item(3, 5, 1.0), _item(7, 4, 2.0), _item(3, 9, 3.0)]
    batch = collate(items, n_frames_per_step=3)
    assert batch.text_lengths.tolist() == [7, 3, 3] and batch.mel_lengths.tolist() == [4, 5, 9]
    assert batch.text.shape == (3, 7) and batch.text[1].tolist() == [1, 2, 3, 0, 0, 0, 0]
    assert batch.mel.shape == (3, 80, 9)  # 9 is already a multiple of 3
    assert batch.mel[0, :, :4].eq(2.0).all() and batch.mel[0, :, 4:].eq(0.0).all()
    assert batch.mel[1, 0, 0] == 1.0 and batch.mel[2, 0, 0] == 3.0  # equal lengths keep their order
    assert batch.gate[0].tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 1]
    assert batch.gate[2].tolist() == [0] * 8 + [1]
    assert collate(items, n_frames_per_step=2).mel.shape[2] == 10
    assert all(t.dtype == torch.long for t in (batch.text, batch.text_lengths, batch.mel_lengths))


def test_batch_to_moves_every_tensor() -> None:
    batch = collate([_item(2, 3, 1.0)], 1).to("cpu")
    assert isinstance(batch, Batch) and all(t.device.type == "cpu" for t in dataclasses.astuple(batch))
    with pytest.raises(ValueError, match="at least one item"):
        collate([], 1)


def _epoch(stream: BatchStream) -> list[list[int]]:
    epoch = stream.epoch if stream.position < stream.n_items else stream.epoch + 1
    batches: list[list[int]] = []
    while True:
        before = stream.state_dict()
        batch = stream.next_indices()
        if stream.epoch != epoch:
            stream.load_state_dict(before)
            return batches
        batches.append(batch)


def test_batch_stream_is_deterministic_and_covers_each_epoch() -> None:
    first, second = BatchStream(10, 3, seed=5), BatchStream(10, 3, seed=5)
    run = [first.next_indices() for _ in range(9)]
    assert run == [second.next_indices() for _ in range(9)]
    epoch0, epoch1 = run[:3], run[3:6]
    assert len({i for b in epoch0 for i in b}) == 9 and epoch0 != epoch1  # drop_last skips one item
    assert run[6:] != [BatchStream(10, 3, seed=6).next_indices() for _ in range(3)]
    tail = BatchStream(10, 3, seed=5, drop_last=False)
    assert [len(b) for b in _epoch(tail)] == [3, 3, 3, 1]


def test_batch_stream_resume_matches_an_uninterrupted_run() -> None:
    straight = BatchStream(11, 4, seed=3)
    expected = [straight.next_indices() for _ in range(12)]
    for k in (0, 1, 2, 5, 11):
        head = BatchStream(11, 4, seed=3)
        got = [head.next_indices() for _ in range(k)]
        resumed = BatchStream(11, 4, seed=0)
        resumed.load_state_dict(head.state_dict())
        got += [resumed.next_indices() for _ in range(12 - k)]
        assert got == expected, k


def test_batch_size_change_mid_epoch_never_repeats_an_item() -> None:
    stream = BatchStream(20, 3, seed=1)
    seen = stream.next_indices() + stream.next_indices()
    stream.set_batch_size(5)
    assert stream.state_dict() == {"epoch": 0, "position": 6, "seed": 1, "batch_size": 5}
    for batch in _epoch(stream):
        assert len(batch) == 5
        seen += batch
    assert len(seen) == len(set(seen)) == 6 + 10  # 4 left over are dropped
    assert stream.next_indices() and stream.epoch == 1


def test_batch_stream_validates_sizes_and_state() -> None:
    with pytest.raises(ValueError, match=r"batch_size must be 1\.\.4 for 4 items, got 5"):
        BatchStream(4, 5, seed=0)
    assert len(BatchStream(4, 5, seed=0, drop_last=False).next_indices()) == 4
    stream = BatchStream(4, 2, seed=0)
    with pytest.raises(ValueError, match="position 9 exceeds the 4 items"):
        stream.load_state_dict({"epoch": 0, "position": 9, "seed": 0, "batch_size": 2})
    with pytest.raises(ValueError, match="epoch must be a non-negative integer, got None"):
        stream.load_state_dict({"position": 0, "seed": 0, "batch_size": 2})


def test_a_test_slice_is_held_out_of_training_and_validation_and_zero_changes_nothing() -> None:
    utts = [Utterance(f"u{i}", "a", Path(f"{i}.wav")) for i in range(20)]
    assert split(utts, 4, seed=1, test_count=0) == split(utts, 4, seed=1)
    train, val = split(utts, 4, seed=1, test_count=5)
    test = held_out_slice(utts, 4, 1, 5)
    assert val == split(utts, 4, seed=1)[1]  # the selection set does not move
    assert len(test) == 5 and len(train) == 11
    assert sorted(train + val + test, key=utts.index) == utts
    assert test == held_out_slice(utts, 4, 1, 5) and test == sorted(test, key=utts.index)
    with pytest.raises(ValueError, match=r"val_count \+ test_count \(4 \+ 16\) must leave training utterances"):
        split(utts, 4, seed=1, test_count=16)
