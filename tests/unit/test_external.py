"""External mode's pieces: hyperparameter rendering, the command line, checkpoint discovery, the config."""

from __future__ import annotations

import json
import re
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from smart_tuner.actors.external.checkpoints import Checkpoints
from smart_tuner.actors.external.hparams import ExternalError, merged_hparams, render_hparams
from smart_tuner.actors.external.script import build_argv
from smart_tuner.state.config import ConfigError, load_config

DECLARED = {
    "learning_rate": 1e-3,
    "batch_size": 16,
    "use_saved_lr": False,
    "ignore_layers": ["embedding.weight"],
    "tag": "ljs",
}


def test_nvidia_format_is_typed_by_the_scripts_values() -> None:
    values = merged_hparams(DECLARED, {"learning_rate": 3e-3, "batch_size": 8.0, "use_saved_lr": True})
    assert values == {
        "learning_rate": 3e-3,
        "batch_size": 8,
        "use_saved_lr": True,
        "ignore_layers": ["embedding.weight"],
        "tag": "ljs",
    }
    assert isinstance(values["batch_size"], int)
    (text,) = render_hparams(values, "nvidia")
    assert text == "learning_rate=0.003,batch_size=8,use_saved_lr=true,ignore_layers=[embedding.weight],tag=ljs"
    assert render_hparams({"lr": 1e-5, "n": 0}, "nvidia") == ["lr=1e-05,n=0"]  # repr round-trips


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"batch_size": 8.5}, "batch_size: the script takes an integer"),
        ({"learning_rate": float("nan")}, "learning_rate: the script takes a finite number"),
        ({"learning_rate": True}, "learning_rate: the script takes a finite number"),
        ({"use_saved_lr": 1}, "use_saved_lr: the script takes true/false"),
        ({"tag": 3}, "tag: the script takes a string"),
        ({"guided_attn_weight": 2.0}, "guided_attn_weight: the script declares no such hyperparameter"),
    ],
)
def test_values_the_script_cannot_take_are_refused_by_name(changes: dict[str, object], error: str) -> None:
    with pytest.raises(ExternalError, match=re.escape(error)):
        merged_hparams(DECLARED, changes)


@pytest.mark.parametrize("value", ["a,b", "x=y", "[1]", "two words", ""])
def test_strings_that_would_break_nvidias_format_are_refused(value: str) -> None:
    with pytest.raises(ExternalError, match="cannot be written in NVIDIA's --hparams format"):
        render_hparams({"tag": value}, "nvidia")


def test_flags_and_config_files(tmp_path: Path) -> None:
    values = {"lr": 0.002, "epochs": 3, "amp": False}
    assert render_hparams(values, "flags") == ["--lr", "0.002", "--epochs", "3", "--amp", "false"]
    assert render_hparams(values, "flags", prefix="--hp.") == [
        "--hp.lr",
        "0.002",
        "--hp.epochs",
        "3",
        "--hp.amp",
        "false",
    ]
    (path,) = render_hparams(values, "json", file=tmp_path / "h.json")
    assert json.loads(Path(path).read_text()) == values
    (path,) = render_hparams(values, "yaml", file=tmp_path / "h.yaml")
    assert yaml.safe_load(Path(path).read_text()) == values


def test_the_command_line_leaves_out_the_checkpoint_option_when_there_is_none() -> None:
    template = [
        "python",
        "train.py",
        "-o",
        "{output_dir}",
        "-c",
        "{checkpoint}",
        "--hparams",
        "{hparams}",
        "--name={segment_id}",
    ]
    fills = {"output_dir": "/r/s1", "segment_id": "s1", "start_step": "0", "run_dir": "/r"}
    assert build_argv(template, fills, ["lr=0.1"], None) == [
        "python",
        "train.py",
        "-o",
        "/r/s1",
        "--hparams",
        "lr=0.1",
        "--name=s1",
    ]
    assert build_argv(template, fills, ["lr=0.1"], "/r/s0/checkpoint_10")[4:6] == ["-c", "/r/s0/checkpoint_10"]
    inline = ["train.py", "--resume={checkpoint}", "--hparams={hparams}", "{hparams}"]
    assert build_argv(inline, fills, ["--lr", "1"], None) == ["train.py", "--hparams=", "--lr", "1"]
    assert build_argv(inline, fills, ["a=1"], "/c")[:2] == ["train.py", "--resume=/c"]


def _zip(path: Path, members: int = 3) -> None:
    with zipfile.ZipFile(path, "w") as z:
        for i in range(members):
            z.writestr(f"archive/data/{i}", bytes(range(256)) * 40)


def test_a_segment_ends_at_the_first_complete_checkpoint_past_its_last_step(tmp_path: Path) -> None:
    found = Checkpoints(tmp_path, "checkpoint_*", re.compile(r"checkpoint_(\d+)$"))
    assert found.first_complete(0) is None  # nothing yet
    for step in (5, 40, 100):
        _zip(tmp_path / f"checkpoint_{step}")
    (tmp_path / "checkpoint_100.sha256").write_text("x")  # matches the glob, not the step pattern
    assert [s for s, _ in found.listed()] == [5, 40, 100]  # by step, not by name (100 < 40 as text)
    assert found.first_complete(30) == (40, tmp_path / "checkpoint_40")
    assert found.first_complete(41) == (100, tmp_path / "checkpoint_100")
    assert found.first_complete(101) is None

    # a torch zip still being written: its central directory is not there yet
    whole = (tmp_path / "checkpoint_100").read_bytes()
    (tmp_path / "checkpoint_120").write_bytes(whole[: len(whole) // 2])
    assert found.first_complete(110) is None
    # a member whose bytes do not match its CRC
    broken = bytearray(whole)
    broken[200] ^= 0xFF
    (tmp_path / "checkpoint_120").write_bytes(bytes(broken))
    assert found.first_complete(110) is None
    (tmp_path / "checkpoint_120").write_bytes(whole)
    assert found.first_complete(110) == (120, tmp_path / "checkpoint_120")


def test_a_file_that_is_not_a_zip_is_complete_once_it_stops_changing(tmp_path: Path) -> None:
    found = Checkpoints(tmp_path, "*.pt", re.compile(r"step(\d+)"), stable_s=0.3)
    path = tmp_path / "model_step7.pt"
    path.write_bytes(b"\x80\x02legacy pickle")
    assert found.first_complete(0) is None  # first look: it may still grow
    assert found.first_complete(0) is None  # unchanged, but not for long enough yet
    time.sleep(0.35)
    assert found.first_complete(0) == (7, path)  # unchanged for stable_s
    path.write_bytes(b"\x80\x02legacy pickle, longer")
    assert found.first_complete(0) is None  # it changed: the clock starts again
    assert found.first_complete(0, writer_gone=True) == (7, path)  # its writer has exited: it is what it is
    folder = tmp_path / "ckpt_step9.pt"
    folder.mkdir()
    assert found.first_complete(8, writer_gone=True) is None  # an empty folder is no checkpoint
    (folder / "weights.bin").write_bytes(b"w" * 100)
    assert found.first_complete(8, writer_gone=True) == (9, folder)


EXTERNAL = """
search_space:
  learning_rate: {type: loguniform, low: 1.0e-4, high: 1.0e-2}
external:
  command: "python train.py -o {output_dir} -l logs -c {checkpoint} --hparams {hparams}"
  hparams: {learning_rate: 1.0e-3, batch_size: 16}
"""


def _load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return load_config(path).resolved


def test_an_external_section_loads(tmp_path: Path) -> None:
    cfg = _load(tmp_path, EXTERNAL)
    ext = cfg.external  # type: ignore[attr-defined]
    assert ext.argv()[:2] == ["python", "train.py"] and ext.hparams_format == "nvidia"
    assert ext.checkpoint_glob == "checkpoint_*" and ext.objective is None  # the preset's


def test_a_presets_objective_is_its_unweighted_mel_loss_unless_the_config_names_one() -> None:
    from smart_tuner.actors.external.worker import objective_of

    assert objective_of(None, "coqui") == "val_mel_post_loss"  # not EvalStats/avg_loss, a weighted total
    assert objective_of(None, "nvidia_tacotron2") == "val_loss" and objective_of(None, "generic") == "val_loss"
    assert objective_of("val_mel_loss", "coqui") == "val_mel_loss"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("{checkpoint}", ""), "external.command: command needs {checkpoint}"),
        (("-l logs", "-l {log_dir}"), "unknown placeholder {log_dir}"),
        (("batch_size: 16", "batch_size: 16, tag: 'a,b'"), "hparams.tag: 'a,b' cannot be written in NVIDIA's"),
        (("learning_rate: 1.0e-3, ", ""), "search_space.learning_rate: not among external.hparams"),
        (("learning_rate: 1.0e-3", "learning_rate: 1"), "loguniform gives floats, but the script's value 1 is int"),
        (("hparams: {", "checkpoint_step: 'checkpoint_'\n  hparams: {"), "needs a group for the step"),
        (("hparams: {", "hparams_format: flags\n  hparams: {"), "{hparams} must be an argument of its own"),
        (
            ("hparams: {", "mlflow_tracking_uri: sqlite:///m.db\n  mlflow_experiment: x\n  hparams: {"),
            "with several scripts at once",
        ),
        (("hparams: {", "names: {momentum: mom}\n  hparams: {"), "names.momentum: not one of hparams"),
        (("hparams: {", "names: {learning_rate: 'l r'}\n  hparams: {"), "'l r' is not a name a script takes"),
        (("hparams: {", "names: {learning_rate: batch_size}\n  hparams: {"), "would reach the script as 'batch_size'"),
    ],
)
def test_bad_external_sections_are_refused_naming_the_key(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    text = EXTERNAL.replace(*edit)
    if "mlflow_tracking_uri" in text:
        text += "n_gpus: 2\n"  # two scripts at once
    if "flags" in text:
        text = text.replace("--hparams {hparams}", "--hparams={hparams}")
    with pytest.raises(ConfigError, match=re.escape(message)):
        _load(tmp_path, text)


def test_the_script_gets_its_own_names_for_ours(tmp_path: Path) -> None:
    cfg = _load(tmp_path, EXTERNAL.replace("hparams: {", "names: {learning_rate: coqpit.lr}\n  hparams: {"))
    ext = cfg.external  # type: ignore[attr-defined]
    assert ext.script_name("learning_rate") == "coqpit.lr" and ext.script_name("batch_size") == "batch_size"


def test_a_users_own_names_come_before_the_presets() -> None:
    from smart_tuner.actors.watcher.layouts import LAYOUTS, UserMapping

    user = UserMapping.parse({"valid:loss": "val_loss", "loss/g/total": "val_objective", "mel_l1": "val_mel_loss"})
    name = user.over(LAYOUTS["espnet2"].name_of)
    assert name("loss", "exp/tensorboard/valid") == "val_loss"  # DIR:tag, the directory's last component
    assert name("loss/g/total", "") == "val_objective"  # a tag with slashes is one tag
    assert name("loss", "exp/tensorboard/train") == "train_loss"  # not theirs: the preset's rule
    assert name("mel_l1", "anywhere") == "val_mel_loss" and name("unknown", "") is None


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("metrics: {'valid:': val_loss}", "name a tag, or DIR:tag"),
        ("metrics: {loss: 'val loss'}", "is not an identifier"),
        ("stdout_patterns: ['loss=(?P<train_loss>\\\\S+)']", "needs a (?P<step>...) group"),
        ("stdout_patterns: ['(?P<step>\\\\d+']", "is not a regular expression"),
    ],
)
def test_bad_user_mappings_are_refused(tmp_path: Path, section: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        _load(tmp_path, EXTERNAL.replace("  hparams: {", f"  {section}\n  hparams: {{"))


def test_the_scripts_threads_follow_the_lease_unless_its_env_says_otherwise() -> None:
    from smart_tuner.actors.external.worker import THREAD_VARIABLES, thread_env
    from smart_tuner.actors.supervisor.devices import Lease
    from smart_tuner.actors.supervisor.launcher import WorkerSpec, worker_command

    assert thread_env(None, {"A": "1"}) == {"A": "1"}  # trainer.threads unset: the script's own choice
    env = thread_env(2, {"MKL_NUM_THREADS": "4"})
    assert env["MKL_NUM_THREADS"] == "4" and all(
        env[name] == "2" for name in THREAD_VARIABLES if name != "MKL_NUM_THREADS"
    )
    lease = Lease(holder="w1", devices=("cpu",))
    cmd = worker_command(WorkerSpec(external=True, threads=1), "ipc:///x", "w1", lease)
    assert cmd[cmd.index("--threads") + 1] == "1"
    assert "--threads" not in worker_command(WorkerSpec(external=True), "ipc:///x", "w1", lease)
