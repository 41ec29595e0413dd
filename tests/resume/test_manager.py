"""CheckpointManager on its own: numbering, pruning, intervals, recovery of an existing
directory, leftovers of interrupted saves, relative and moved directories (acceptance e).
TensorFlow's own manager is the reference in test_manager_tf.py."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

import torchckpt
from torchckpt import CheckpointManager
from torchckpt.errors import CorruptCheckpointError
from torchckpt.format import latest_checkpoint, read_state
from torchckpt.format.naming import temp_path


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _names(paths):
    return [os.path.basename(p) for p in paths]


def _files(directory):
    return sorted(os.listdir(directory))


def _bundle(name):
    return [f"{name}.data-00000-of-00001", f"{name}.index"]


def _ckpt(value=0.0):
    return torchckpt.Checkpoint(w=torch.full((3,), float(value)))


def test_numbering_and_max_to_keep(tmp_path):
    ckpt = _ckpt()
    m = CheckpointManager(ckpt, tmp_path, max_to_keep=2, clock=Clock())
    assert m.latest_checkpoint is None and m.checkpoints == []
    paths = [m.save() for _ in range(4)]
    assert _names(paths) == ["ckpt-1", "ckpt-2", "ckpt-3", "ckpt-4"]
    assert paths[-1] == os.path.join(str(tmp_path), "ckpt-4") == m.latest_checkpoint
    assert _names(m.checkpoints) == ["ckpt-3", "ckpt-4"]
    assert _files(tmp_path) == sorted(["checkpoint", *_bundle("ckpt-3"), *_bundle("ckpt-4")])
    state = read_state(str(tmp_path))
    with open(tmp_path / "checkpoint", encoding="utf-8") as f:
        text = f.read()
    assert 'model_checkpoint_path: "ckpt-4"' in text and str(tmp_path) not in text
    assert _names(state.all_model_checkpoint_paths) == ["ckpt-3", "ckpt-4"]
    assert ckpt.save_counter == 4


def test_checkpoint_number_and_overwrite(tmp_path):
    ckpt = _ckpt()
    m = CheckpointManager(ckpt, tmp_path, max_to_keep=3, checkpoint_name="model", clock=Clock())
    assert _names([m.save(10), m.save(torch.tensor(20)), m.save(10)]) == ["model-10", "model-20",
                                                                          "model-10"]
    assert ckpt.save_counter == 3  # incremented even with an explicit number
    assert _names(m.checkpoints) == ["model-20", "model-10"]  # the overwritten one moved last
    assert _names([m.save()]) == ["model-4"]


def test_keep_checkpoint_every_n_hours_keeps_files_but_stops_listing_them(tmp_path):
    clock = Clock()
    m = CheckpointManager(_ckpt(), tmp_path, max_to_keep=2, keep_checkpoint_every_n_hours=1,
                          clock=clock)
    for _ in range(8):
        clock.advance(25 * 60)
        m.save()
    # Saved at 25, 50, ..., 200 minutes; the first manager's last_preserved_timestamp is
    # "construction - 1s". ckpt-3 (75 min) is the first at least an hour after it, ckpt-6
    # (150 min) the first an hour after ckpt-3.
    assert _names(m.checkpoints) == ["ckpt-7", "ckpt-8"]
    kept = sorted({f.split(".")[0] for f in _files(tmp_path) if f != "checkpoint"})
    assert kept == ["ckpt-3", "ckpt-6", "ckpt-7", "ckpt-8"]
    assert read_state(str(tmp_path)).last_preserved_timestamp == clock.now - 2 * 25 * 60


def test_checkpoint_interval_with_step_counter(tmp_path):
    step = torch.zeros((), dtype=torch.int64)
    m = CheckpointManager(_ckpt(), tmp_path, max_to_keep=None, step_counter=step,
                          checkpoint_interval=3, clock=Clock())
    saved = []
    for s in [0, 1, 2, 3, 3, 4, 6, 7]:
        step.fill_(s)
        saved.append(m.save() is not None)
    assert saved == [True, False, False, True, False, False, True, False]
    step.fill_(8)
    assert m.save(check_interval=False) is not None
    assert m.save(check_interval=False) is None  # the same step is never saved twice
    with pytest.raises(ValueError, match="step_counter"):
        CheckpointManager(_ckpt(), tmp_path, max_to_keep=1, checkpoint_interval=2)


def test_invalid_max_to_keep():
    with pytest.raises(ValueError, match="max_to_keep"):
        CheckpointManager(_ckpt(), "unused", max_to_keep=0)


def test_restore_or_initialize(tmp_path):
    calls = []
    ckpt = _ckpt(1)
    m = CheckpointManager(ckpt, tmp_path, max_to_keep=1, init_fn=lambda: calls.append(1))
    assert m.restore_or_initialize() is None and calls == [1]
    m.save()
    m.close()  # a restart: the next manager takes over the directory
    fresh = _ckpt(0)
    step = torch.tensor(7)
    m2 = CheckpointManager(fresh, tmp_path, max_to_keep=1, init_fn=lambda: calls.append(2),
                           step_counter=step, checkpoint_interval=5)
    assert m2.restore_or_initialize() == m.latest_checkpoint and calls == [1]
    assert torch.equal(fresh.w, torch.ones(3)) and fresh.save_counter == 1
    step.fill_(9)
    assert m2.save() is None  # restore_or_initialize took step 7 as the last save


def test_a_new_manager_takes_over_the_directory(tmp_path):
    clock = Clock()
    ckpt = _ckpt()
    m = CheckpointManager(ckpt, tmp_path, max_to_keep=3, clock=clock)
    for _ in range(3):
        clock.advance(10)
        m.save()
    m.close()
    again = CheckpointManager(ckpt, tmp_path, max_to_keep=1, clock=clock)
    assert again.latest_checkpoint == m.latest_checkpoint
    assert again.checkpoints == m.checkpoints
    again.save()
    assert _names(again.checkpoints) == ["ckpt-4"]
    assert _files(tmp_path) == sorted(["checkpoint", *_bundle("ckpt-4")])


def test_an_unparseable_state_file_is_an_error(tmp_path):
    (tmp_path / "checkpoint").write_text("model_checkpoint_path: [")
    with pytest.raises(CorruptCheckpointError, match="checkpoint"):
        CheckpointManager(_ckpt(), tmp_path, max_to_keep=1)


def test_relative_directory_gives_relative_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    m = CheckpointManager(_ckpt(), os.path.join("runs", "a"), max_to_keep=2)
    assert m.save() == os.path.join("runs", "a", "ckpt-1")
    assert read_state(os.path.join("runs", "a")).model_checkpoint_path == os.path.join(
        "runs", "a", "ckpt-1")
    assert 'model_checkpoint_path: "ckpt-1"' in (tmp_path / "runs" / "a" / "checkpoint").read_text()


def test_moved_directory_still_resolves_and_keeps_pruning(tmp_path):
    """A moved directory keeps resolving and pruning."""
    src, dst = tmp_path / "here", tmp_path / "elsewhere" / "run"
    m = CheckpointManager(_ckpt(), src, max_to_keep=2)
    for v in range(3):
        m.checkpoint.w.fill_(v)
        m.save()
    m.close()
    shutil.move(str(src), str(dst))
    expected = os.path.join(str(dst), "ckpt-3")
    assert latest_checkpoint(str(dst)) == expected
    assert torchckpt.latest_checkpoint(str(dst)) == expected
    moved = CheckpointManager(_ckpt(), dst, max_to_keep=2)
    assert moved.latest_checkpoint == expected
    assert moved.checkpoints == [os.path.join(str(dst), "ckpt-2"), expected]
    fresh = _ckpt(-1)
    fresh.restore(moved.latest_checkpoint).assert_consumed()
    assert torch.equal(fresh.w, torch.full((3,), 2.0)) and fresh.save_counter == 3
    moved.close()
    moved2 = CheckpointManager(fresh, dst, max_to_keep=2)
    moved2.save()
    assert _files(dst) == sorted(["checkpoint", *_bundle("ckpt-3"), *_bundle("ckpt-4")])


def test_leftovers_of_interrupted_saves_are_removed_and_others_kept(tmp_path):
    ckpt = _ckpt()
    m = CheckpointManager(ckpt, tmp_path, max_to_keep=5)
    m.save()
    stale = [temp_path(str(tmp_path / "ckpt-7.index")),
             temp_path(str(tmp_path / "ckpt-2.data-00000-of-00001")),
             str(tmp_path / ("checkpoint.tmp" + "ab" * 16))]
    # ckpt-2 is the prefix of the next save: an unrecorded bundle of it is a leftover.
    unrecorded = [str(tmp_path / f) for f in _bundle("ckpt-2")]
    foreign = [temp_path(str(tmp_path / "other-1.index")), str(tmp_path / "ckpt-9.index"),
               str(tmp_path / "notes.txt")]
    for path in stale + unrecorded + foreign:
        with open(path, "wb") as f:
            f.write(b"junk")
    assert m.save() == str(tmp_path / "ckpt-2")
    assert not any(os.path.exists(p) for p in stale)
    assert all(os.path.exists(p) for p in foreign)
    fresh = _ckpt(5)
    fresh.restore(m.latest_checkpoint).assert_consumed()  # the junk did not survive
    assert torch.equal(fresh.w, torch.zeros(3))


def test_sweep_deletes_only_unnamed_checkpoints_index_first(tmp_path, monkeypatch):
    m = CheckpointManager(_ckpt(), tmp_path, max_to_keep=1)
    m.save()
    removed = []
    real_remove = os.remove

    def record(path, *a, **kw):
        state = read_state(str(tmp_path))
        named = [state.model_checkpoint_path, *state.all_model_checkpoint_paths]
        assert os.path.basename(path).split(".")[0] not in _names(named)
        removed.append(os.path.basename(path))
        real_remove(path, *a, **kw)

    monkeypatch.setattr(os, "remove", record)
    m.save()
    assert removed == ["ckpt-1.index", "ckpt-1.data-00000-of-00001"]


def test_data_shards_without_an_index_are_removed_unless_named(tmp_path):
    m = CheckpointManager(_ckpt(), tmp_path, max_to_keep=5)
    m.save()
    orphan = str(tmp_path / "ckpt-8.data-00000-of-00001")  # e.g. a sweep died after the index
    named = str(tmp_path / "ckpt-1.data-00000-of-00001")
    os.remove(tmp_path / "ckpt-1.index")  # ckpt-1 stays named by the state file: not ours to fix
    with open(orphan, "wb") as f:
        f.write(b"junk")
    m.save()
    assert not os.path.exists(orphan) and os.path.exists(named)


def test_asynchronous_save_is_recorded_once_committed(tmp_path):
    m = CheckpointManager(_ckpt(), tmp_path, max_to_keep=1)
    path = m.save(options=torchckpt.CheckpointOptions(enable_async=True))
    m.sync()
    assert m.latest_checkpoint == path == latest_checkpoint(str(tmp_path))
    m.save(options=torchckpt.CheckpointOptions(enable_async=True))
    m.sync()
    assert _files(tmp_path) == sorted(["checkpoint", *_bundle("ckpt-2")])
