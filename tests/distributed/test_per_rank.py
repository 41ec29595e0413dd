"""Per-rank objects without a process group: keys, placement on restore, fragments.

``per_rank.process_rank`` is replaced to play a rank of a world; a save made
that way is the one-rank save (``collective=False``) of that rank, which is
what a rank writes of its own per-rank values in a collective save too.
"""

from __future__ import annotations

import pytest
import torch

import torchckpt
from torchckpt import Checkpoint, CheckpointOptions, PerRank
from torchckpt.distributed import per_rank
from torchckpt.distributed.fragments import merge_fragments, split_per_rank
from torchckpt.distributed.one_rank import one_rank_plan
from torchckpt.errors import UnmatchedError, UntrackableError
from torchckpt.saving import plan_save


class Meter:
    """A user object whose state differs per rank."""

    def __init__(self, total: float = 0.0, seen: list[int] | None = None) -> None:
        self.total = total
        self.seen = list(seen or [])

    def state_dict(self) -> dict:
        return {"total": torch.tensor(self.total), "seen": list(self.seen)}

    def load_state_dict(self, sd: dict) -> None:
        self.total = float(sd["total"])
        self.seen = list(sd["seen"])


@pytest.fixture
def as_rank(monkeypatch):
    def play(rank: int, world: int) -> None:
        monkeypatch.setattr(per_rank, "process_rank", lambda: (rank, world))
    return play


def _save(tmp_path, as_rank, rank: int, world: int, meter: Meter) -> str:
    as_rank(rank, world)
    ckpt = Checkpoint(w=torch.arange(3.0), meter=PerRank(meter), rng=torchckpt.RNGState())
    return ckpt.write(str(tmp_path / f"r{rank}of{world}"))


def _fresh() -> tuple[Checkpoint, Meter]:
    meter = Meter(-1.0)
    return Checkpoint(w=torch.zeros(3), meter=PerRank(meter), rng=torchckpt.RNGState()), meter


@pytest.mark.parametrize("name, parsed", [("rank_0_of_2", (0, 2)), ("rank_11_of_12", (11, 12)),
                                          ("rank_2_of_2", None), ("rank_0_of_2x", None),
                                          ("rank_-1_of_2", None), ("weight", None)])
def test_rank_names(name: str, parsed) -> None:
    assert per_rank.parse_rank_name(name) == parsed
    if parsed:
        assert per_rank.rank_name(*parsed) == name


def test_one_process_saves_per_rank_objects_as_plain_ones() -> None:
    meter = Meter(2.5, [1])
    wrapped = plan_save(Checkpoint(meter=PerRank(meter), rng=torchckpt.RNGState()))
    plain = plan_save(Checkpoint(meter=meter, rng=torchckpt.RNGState()))
    assert [k for k, _ in wrapped.tensors] == [k for k, _ in plain.tensors]
    assert wrapped.strings == plain.strings
    assert "meter/.ATTRIBUTES/py_state" in dict(wrapped.strings)


def test_keys_name_the_rank(as_rank) -> None:
    as_rank(1, 2)
    plan = plan_save(Checkpoint(meter=PerRank(Meter(1.0)), rng=torchckpt.RNGState()))
    keys = [k for k, _ in plan.tensors] + [k for k, _ in plan.strings]
    assert "meter/rank_1_of_2/.ATTRIBUTES/tensor_0" in keys
    assert "rng/rank_1_of_2/.ATTRIBUTES/py_state" in keys
    assert not any(k.startswith(("meter/.ATTRIBUTES/", "rng/.ATTRIBUTES/")) for k in keys)


def test_same_rank_same_world_restores(tmp_path, as_rank) -> None:
    path = _save(tmp_path, as_rank, 1, 2, Meter(4.0, [7, 9]))
    before = torch.rand(3)
    ckpt, meter = _fresh()
    ckpt.read(path).assert_consumed()
    assert (meter.total, meter.seen) == (4.0, [7, 9])
    assert torch.equal(torch.rand(3), before)  # the generators are back at the save


def test_another_rank_of_the_same_world_leaves_them_to_their_rank(tmp_path, as_rank) -> None:
    path = _save(tmp_path, as_rank, 1, 2, Meter(4.0))
    as_rank(0, 2)
    ckpt, meter = _fresh()
    report = ckpt.read(path).report()
    assert meter.total == -1.0
    assert report.unused_in_checkpoint == [] and report.unplaced_per_rank == []
    assert report.unmatched_live == ["meter.rank_0_of_2", "rng.rank_0_of_2"]  # rank 0 saved none


@pytest.mark.parametrize("rank, world", [(0, 3), (1, 3), (0, 1)])
def test_another_world_size_places_none_and_reports_them(tmp_path, as_rank, rank: int,
                                                        world: int) -> None:
    path = _save(tmp_path, as_rank, 1, 2, Meter(4.0))
    as_rank(rank, world)
    ckpt, meter = _fresh()
    status = ckpt.read(path)
    report = status.report()
    assert meter.total == -1.0
    assert torch.equal(ckpt.w, torch.arange(3.0))  # the replicated value lands
    assert report.unplaced_per_rank == ["meter.rank_1_of_2", "rng.rank_1_of_2"]
    assert report.unused_in_checkpoint == []
    live = ["meter", "rng"] if world == 1 else [f"meter.rank_{rank}_of_{world}",
                                                f"rng.rank_{rank}_of_{world}"]
    assert report.unmatched_live == live
    with pytest.raises(UnmatchedError, match="per-rank values saved by a world of another size"):
        status.assert_consumed()


def test_a_one_process_checkpoint_is_not_placed_into_a_rank(tmp_path, as_rank) -> None:
    path = _save(tmp_path, as_rank, 0, 1, Meter(4.0))
    as_rank(0, 2)
    ckpt, meter = _fresh()
    report = ckpt.read(path).report()
    assert meter.total == -1.0
    assert report.unplaced_per_rank == ["meter", "rng"]
    assert report.unmatched_live == ["meter.rank_0_of_2", "rng.rank_0_of_2"]


def test_fragments_of_different_structure_merge_into_one_graph(as_rank) -> None:
    """Each rank's per-rank subtree may differ; the shared graphs must not."""
    shared, frags, keys = [], [], set()
    for rank, meter in enumerate([Meter(1.0), Meter(2.0, [5, 6])]):
        as_rank(rank, 2)
        ckpt = Checkpoint(w=torch.zeros(2), meter=PerRank({"m": meter, "n": rank}))
        split = split_per_rank(ckpt, plan_save(ckpt), rank, 2)
        shared.append(split.shared.graph.to_bytes())
        frags.append(split.fragment)
        keys |= {k for k, _ in split.own_tensors} | {k for k, _ in split.own_strings}
        assert all(f"rank_{rank}_of_2" in k for k, _ in split.own_tensors)
        assert not any("rank_" in k for k, _ in split.shared.tensors)
    assert shared[0] == shared[1]
    from torchckpt.graph.object_graph import ObjectGraph

    merged = merge_fragments(ObjectGraph.from_bytes(shared[0]), frags, 2)
    merged = ObjectGraph.from_bytes(merged.to_bytes())  # a valid graph
    paths = merged.paths()
    names = sorted(".".join(paths[i]) for i, n in enumerate(merged.nodes) if n.attributes)
    assert names == ["meter.rank_0_of_2.m", "meter.rank_0_of_2.n", "meter.rank_1_of_2.m",
                     "meter.rank_1_of_2.n", "w"]
    assert keys == {a.checkpoint_key for n in merged.nodes for a in n.attributes
                    if "rank_" in a.checkpoint_key}


def test_a_per_rank_object_may_not_share_state_with_the_rest(as_rank) -> None:
    as_rank(0, 2)
    model = torch.nn.Linear(2, 2)
    ckpt = Checkpoint(model=model, per_rank=PerRank({"head": model}))
    with pytest.raises(UntrackableError, match="per-rank object"):
        split_per_rank(ckpt, plan_save(ckpt), 0, 2)


def test_one_rank_plan_keeps_plain_plans() -> None:
    plan = plan_save(Checkpoint(w=torch.ones(2)))
    assert one_rank_plan(plan, "p") is plan


@pytest.mark.parametrize("kwargs", [{"collective": "all"}, {"collective_timeout": 0},
                                    {"collective_timeout": -1.0}])
def test_options_are_checked(kwargs) -> None:
    with pytest.raises(ValueError):
        CheckpointOptions(**kwargs)


def test_docstring_examples() -> None:
    import doctest

    result = doctest.testmod(per_rank, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_a_one_process_module_is_not_placed_into_a_rank(tmp_path, as_rank) -> None:
    as_rank(0, 1)
    path = Checkpoint(head=PerRank(torch.nn.Linear(2, 1))).write(str(tmp_path / "one"))
    as_rank(1, 2)
    head = torch.nn.Linear(2, 1)
    report = Checkpoint(head=PerRank(head)).read(path).report()
    assert report.unplaced_per_rank == ["head.bias", "head.weight"]
    assert report.unused_in_checkpoint == []
    assert report.unmatched_live == ["head.rank_1_of_2.bias", "head.rank_1_of_2.weight"]
