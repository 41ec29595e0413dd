"""The ``checkpoint`` state file: TF's text, relative paths, atomic rewrite."""

from __future__ import annotations

import os

import pytest

from golden_data import DATA
from torchckpt.errors import CorruptCheckpointError
from torchckpt.format.state_file import (
    CheckpointState,
    parse_state,
    read_state,
    render_state,
    write_state,
)


def test_render_reproduces_tf_text() -> None:
    # The CheckpointManager's file, with timestamps: same text after a parse/render round trip.
    with open(os.path.join(DATA, "ckpt_manager", "checkpoint"), encoding="utf-8") as f:
        text = f.read()
    state = parse_state(text)
    assert state.model_checkpoint_path == "step-40"
    assert state.all_model_checkpoint_paths == ["step-30", "step-40"]
    assert len(state.all_model_checkpoint_timestamps) == 2
    assert render_state(state) == text


def test_render_known_answer() -> None:
    state = CheckpointState("ckpt-2", ["ckpt-1", "ckpt-2"], [1700000000.0, 1.5e-07], 1e20)
    assert render_state(state) == (
        'model_checkpoint_path: "ckpt-2"\n'
        'all_model_checkpoint_paths: "ckpt-1"\n'
        'all_model_checkpoint_paths: "ckpt-2"\n'
        "all_model_checkpoint_timestamps: 1700000000.0\n"
        "all_model_checkpoint_timestamps: 1.5e-07\n"
        "last_preserved_timestamp: 1e+20\n")


def test_parse_accepts_any_order_and_comments() -> None:
    text = '# hi\nall_model_checkpoint_paths: "a"\n  model_checkpoint_path:   "a"  \n'
    assert parse_state(text) == CheckpointState("a", ["a"])


@pytest.mark.parametrize("text,why", [
    ("model_checkpoint_path: ", "unparseable"),
    ('nonsense: "x"', "unparseable"),
    ('all_model_checkpoint_paths: "a"', "model_checkpoint_path is empty"),
])
def test_parse_errors_name_the_file(text: str, why: str) -> None:
    with pytest.raises(CorruptCheckpointError, match=why) as info:
        parse_state(text, "/some/dir/checkpoint")
    assert "/some/dir/checkpoint" in str(info.value)


def test_write_then_read_resolves_relative_paths(tmp_path: os.PathLike) -> None:
    d = str(tmp_path)
    write_state(d, os.path.join(d, "ckpt-2"), [os.path.join(d, "ckpt-1")], sync=False)
    with open(os.path.join(d, "checkpoint"), encoding="utf-8") as f:
        assert f.read() == ('model_checkpoint_path: "ckpt-2"\n'
                            'all_model_checkpoint_paths: "ckpt-1"\n'
                            'all_model_checkpoint_paths: "ckpt-2"\n')
    state = read_state(d)
    assert state is not None
    assert state.model_checkpoint_path == os.path.join(d, "ckpt-2")
    assert state.all_model_checkpoint_paths == [os.path.join(d, f"ckpt-{i}") for i in (1, 2)]
    assert os.listdir(d) == ["checkpoint"]  # no temporary file left behind


def test_read_state_missing_and_binary(tmp_path: os.PathLike) -> None:
    assert read_state(str(tmp_path)) is None
    with open(os.path.join(tmp_path, "checkpoint"), "wb") as f:
        f.write(b"\xff\xfe garbage")
    with pytest.raises(CorruptCheckpointError, match="not UTF-8") as info:
        read_state(str(tmp_path))
    assert "checkpoint" in str(info.value)
