"""The format-layer helpers the manager uses to find an interrupted save's leftovers."""

from __future__ import annotations

import os

from torchckpt.format.naming import bundle_files, final_path_of_temp, temp_files, temp_path
from torchckpt.format.state_file import state_temp_files, write_state


def _touch(path):
    with open(path, "wb"):
        pass
    return str(path)


def test_final_path_of_temp():
    assert final_path_of_temp(temp_path("d/ckpt-1.index")) == "d/ckpt-1.index"
    assert final_path_of_temp("d/ckpt-1.index") is None
    assert final_path_of_temp("d/ckpt-1.index.tempstateX") is None


def test_bundle_files_index_first_then_shards(tmp_path):
    p = str(tmp_path / "ckpt-1")
    shards = [_touch(f"{p}.data-0000{i}-of-00002") for i in (1, 0)]
    _touch(tmp_path / "ckpt-10.index")
    assert bundle_files(p) == sorted(shards)
    index = _touch(f"{p}.index")
    assert bundle_files(p) == [index, *sorted(shards)]


def test_temp_files_of_one_prefix_only(tmp_path):
    p = str(tmp_path / "ckpt-1")
    mine = [_touch(temp_path(f"{p}.index")), _touch(temp_path(f"{p}.data-00000-of-00001"))]
    _touch(temp_path(str(tmp_path / "ckpt-10.index")))
    _touch(f"{p}.index")
    assert temp_files(p) == sorted(mine)


def test_state_temp_files(tmp_path):
    d = str(tmp_path)
    write_state(d, os.path.join(d, "ckpt-1"))
    stale = _touch(tmp_path / ("checkpoint.tmp" + "0123456789abcdef" * 2))
    _touch(tmp_path / "checkpoint.tmpnothex")
    assert state_temp_files(d) == [stale]
    assert state_temp_files(str(tmp_path / "missing")) == []
