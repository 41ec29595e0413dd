"""No operation follows a ``checkpoint`` state file out of its directory.

Copied run directories made by real TensorFlow (a TF1 ``Saver``'s, with the
original directory's absolute paths; a TF2 ``CheckpointManager``'s, relative, with
timestamps), and forged state files, are refused at every entry point
(``Checkpoint.restore/read``, ``CheckpointManager``, the reader API, the CLI) with
an ``OutsideDirectoryError`` naming the state file and the path, and the files the
state file names elsewhere survive byte for byte.
"""

from __future__ import annotations

import hashlib
import os
import shutil

import pytest
import torch

import torchckpt
from torchckpt.cli import main as cli
from torchckpt.errors import OutsideDirectoryError

STATE = "checkpoint"


def _digests(directory):
    out = {}
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as f:
            out[name] = hashlib.sha256(f.read()).hexdigest()
    return out


def _tf1_run(tf, directory):
    """Two checkpoints of a TF1 ``Saver`` with an absolute save path (absolute state paths)."""
    os.makedirs(directory)
    with tf.Graph().as_default():
        w = tf.compat.v1.get_variable("w", initializer=tf.constant([1.0, 2.0, 3.0]))
        saver = tf.compat.v1.train.Saver([w], max_to_keep=5)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            for step in (1, 2):
                saver.save(sess, os.path.join(directory, "model.ckpt"), global_step=step)


def _tf2_run(tf, directory):
    """Two checkpoints of a TF2 ``CheckpointManager`` (relative paths, timestamps)."""
    ckpt = tf.train.Checkpoint(w=tf.Variable([1.0, 2.0, 3.0]))
    manager = tf.train.CheckpointManager(ckpt, directory, max_to_keep=5)
    manager.save()
    manager.save()


def _every_entry_point(directory):
    """Each way into a directory's state file, as a callable that must refuse it."""
    def manager_save():
        ckpt = torchckpt.Checkpoint(w=torch.zeros(3))
        torchckpt.CheckpointManager(ckpt, directory, max_to_keep=1).save()

    def manager_restore():
        ckpt = torchckpt.Checkpoint(w=torch.zeros(3))
        torchckpt.CheckpointManager(ckpt, directory, max_to_keep=1).restore_or_initialize()

    return {
        "Checkpoint.restore": lambda: torchckpt.Checkpoint(w=torch.zeros(3)).restore(directory),
        "Checkpoint.read": lambda: torchckpt.Checkpoint(w=torch.zeros(3)).read(directory),
        "CheckpointManager.save": manager_save,
        "CheckpointManager.restore_or_initialize": manager_restore,
        "load_checkpoint": lambda: torchckpt.load_checkpoint(directory),
        "list_variables": lambda: torchckpt.list_variables(directory),
        "load_variable": lambda: torchckpt.load_variable(directory, "w"),
        "latest_checkpoint": lambda: torchckpt.latest_checkpoint(directory),
    }


def _assert_refused_everywhere(directory, named, capsys):
    state_file = os.path.join(directory, STATE)
    for name, call in _every_entry_point(directory).items():
        with pytest.raises(OutsideDirectoryError) as info:
            call()
        assert info.value.path == state_file, name
        assert state_file in str(info.value) and named in str(info.value), name
    for command in ("verify", "inspect", "graph"):
        assert cli([command, directory]) == 2, command
        err = capsys.readouterr().err
        assert state_file in err and "outside" in err, (command, err)


@pytest.mark.tf
def test_copied_tf1_run_directory_is_refused_and_the_original_survives(tf, tmp_path, capsys):
    original = str(tmp_path / "orig" / "run")
    _tf1_run(tf, original)
    with open(os.path.join(original, STATE)) as f:
        assert f'"{original}/model.ckpt-2"' in f.read()  # TF1 writes absolute paths
    before = _digests(original)
    copy = str(tmp_path / "copy" / "run")
    shutil.copytree(original, copy)

    _assert_refused_everywhere(copy, f"{original}/model.ckpt-2", capsys)
    assert _digests(original) == before
    # the message points at the same checkpoint inside the copy, which opens when named
    with pytest.raises(OutsideDirectoryError, match="model.ckpt-2' exists here"):
        torchckpt.latest_checkpoint(copy)
    value = torchckpt.load_variable(os.path.join(copy, "model.ckpt-2"), "w")
    assert torch.equal(value, torch.tensor([1.0, 2.0, 3.0]))


@pytest.mark.tf
def test_copied_tf2_run_directory_works_and_forged_paths_are_refused(tf, tmp_path, capsys):
    original = str(tmp_path / "orig")
    _tf2_run(tf, original)
    copy = str(tmp_path / "copy")
    shutil.copytree(original, copy)
    # relative paths: the copy is self-contained and works
    assert torchckpt.latest_checkpoint(copy) == os.path.join(copy, "ckpt-2")
    ckpt = torchckpt.Checkpoint(w=torch.zeros(3))
    with torchckpt.CheckpointManager(ckpt, copy, max_to_keep=5) as manager:
        assert manager.restore_or_initialize() == os.path.join(copy, "ckpt-2")
    assert torch.equal(ckpt.w, torch.tensor([1.0, 2.0, 3.0]))

    # forged: the copy's state file lists the original's checkpoints, with timestamps,
    # once by a relative path and once by an absolute one
    before = _digests(original)
    with open(os.path.join(copy, STATE)) as f:
        text = f.read()
    forged = text.replace('all_model_checkpoint_paths: "ckpt-1"',
                          'all_model_checkpoint_paths: "../orig/ckpt-1"')
    forged = forged.replace('all_model_checkpoint_paths: "ckpt-2"',
                            f'all_model_checkpoint_paths: "{original}/ckpt-2"')
    assert forged != text and "all_model_checkpoint_timestamps" in forged
    with open(os.path.join(copy, STATE), "w") as f:
        f.write(forged)
    _assert_refused_everywhere(copy, "../orig/ckpt-1", capsys)
    assert _digests(original) == before


@pytest.mark.parametrize("named", ["../other/ckpt-1", "/{elsewhere}/ckpt-1",
                                   "sub/../../other/ckpt-1", "link/ckpt-1", "."])
def test_forged_paths_are_refused_and_a_sacrificial_checkpoint_survives(tmp_path, named, capsys):
    other = tmp_path / "other"
    victim = torchckpt.Checkpoint(w=torch.ones(3))
    victim.save(str(other / "ckpt"))  # other/ckpt-1
    before = _digests(str(other))
    run = tmp_path / "run"
    run.mkdir()
    os.symlink(other, run / "link")  # a symlinked subdirectory leads out too
    named = named.format(elsewhere=str(other)[1:].rsplit("/", 1)[0]) if "{" in named else named
    (run / STATE).write_text(f'model_checkpoint_path: "{named}"\n'
                             f'all_model_checkpoint_paths: "{named}"\n'
                             "all_model_checkpoint_timestamps: 1.0\n")
    _assert_refused_everywhere(str(run), named, capsys)
    assert _digests(str(other)) == before


def test_a_manager_never_deletes_outside_its_directory_even_when_told_to(tmp_path):
    """Defence in depth: the deletion itself checks containment too."""
    from torchckpt.manager import _delete_checkpoint

    victim = torchckpt.Checkpoint(w=torch.ones(3))
    prefix = victim.save(str(tmp_path / "other" / "ckpt"))
    before = _digests(str(tmp_path / "other"))
    (tmp_path / "run").mkdir()
    with pytest.raises(OutsideDirectoryError):
        _delete_checkpoint(str(tmp_path / "run"), prefix)
    assert _digests(str(tmp_path / "other")) == before
