"""What free-running synthesis refuses to read, and how it says so (no model needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from smart_tuner.trainer.synthesis import encode_text, main
from smart_tuner.trainer.text import SYMBOLS


def test_plain_text_becomes_symbol_ids() -> None:
    ids = encode_text("The red boat, 2 feet long.")
    assert "".join(SYMBOLS[i] for i in ids) == "the red boat, two feet long."


@pytest.mark.parametrize("text", ["", "   ", "...", "?! -"])
def test_text_without_letters_is_refused_by_name(text: str) -> None:
    with pytest.raises(ValueError, match=r"nothing to say .* no letters"):
        encode_text(text)


def test_an_unknown_character_is_named_with_its_position() -> None:
    with pytest.raises(ValueError, match=r"'#' \(position 4 of the normalised text\) is not one of the model's"):
        encode_text("the #1 boat")


def test_the_command_refuses_bad_text_before_it_opens_the_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such-checkpoint.pt"
    assert main([str(missing), "", str(tmp_path / "out.wav")]) == 2
    err = capsys.readouterr().err
    assert "synthesis: error: nothing to say in ''" in err and "no-such-checkpoint" not in err
    assert not (tmp_path / "out.wav").exists()
