"""Each status assertion fails with a readable list exactly when
it should. A table of restores - exact, missing, extra, pending (attached later and
lazy), nothing matched, no checkpoint - against every assertion, with the
``MatchReport`` each must produce.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import pytest
import torch
from torch import nn

from torchckpt import Checkpoint, MatchReport, RestoreStatus, UnmatchedError

ASSERTIONS = ("assert_consumed", "assert_existing_objects_matched", "assert_nontrivial_match",
              "expect_partial")
W, B = "model.fc.weight", "model.fc.bias"


def slot(var: str, name: str = "momentum_buffer") -> str:
    return f"optimizer state '{name}' of {var}"


class Small(nn.Module):
    def __init__(self, fc: nn.Module | None = None, extra: bool = False) -> None:
        super().__init__()
        if fc is not None:
            self.fc = fc
        if extra:
            self.extra = nn.Linear(2, 2)


def sgd(model: nn.Module) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


@pytest.fixture(scope="module")
def path(tmp_path_factory) -> str:
    model = Small(nn.Linear(2, 2))
    opt = sgd(model)
    model.fc(torch.ones(1, 2)).sum().backward()
    opt.step()
    return Checkpoint(model=model, optimizer=opt, cfg={"a": 1}).save(
        str(tmp_path_factory.mktemp("status") / "c"))


def exact(path):
    model = Small(nn.Linear(2, 2))
    return Checkpoint(model=model, optimizer=sgd(model), cfg={"a": 0}).restore(path)


def missing(path):
    """Live values the checkpoint does not have: a layer, and optimizer state for it."""
    model = Small(nn.Linear(2, 2), extra=True)
    opt = sgd(model)
    model.extra(model.fc(torch.ones(1, 2))).sum().backward()
    opt.step()
    return Checkpoint(model=model, optimizer=opt, cfg={"a": 0}).restore(path)


def extra(path):
    """Checkpoint values nothing can take: a dict cannot announce new keys."""
    model = Small(nn.Linear(2, 2))
    return Checkpoint(model=model, optimizer=sgd(model), cfg={}).restore(path)


def pending(path):
    """The layer is attached after restore(): its values and slots wait."""
    model = Small()
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    return Checkpoint(model=model, optimizer=opt, cfg={"a": 0}).restore(path)


def pending_lazy(path):
    """A lazy layer: matched, waiting for its first forward."""
    model = Small(nn.LazyLinear(2))
    return Checkpoint(model=model, optimizer=sgd(model), cfg={"a": 0}).restore(path)


def nothing(path):
    """read() (no save_counter) into objects with other names."""
    return Checkpoint(other=nn.Linear(2, 2)).read(path)


def nothing_but_counter(path):
    """restore() creates save_counter, which matches: TF then calls the match nontrivial."""
    return Checkpoint(other=nn.Linear(2, 2)).restore(path)


def no_checkpoint(path):
    return Checkpoint(model=Small(nn.Linear(2, 2))).restore(None)


ALL_SLOTS = sorted(slot(v) for v in (W, B))


@dataclass
class Case:
    build: Callable[[str], RestoreStatus]
    fails: set[str]  # assertions that must raise
    unused: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    matched: list[str] | None = None  # None: don't check


CASES = {
    "exact": Case(exact, set(), matched=sorted(["cfg.a", B, W, "optimizer", *ALL_SLOTS,
                                                "save_counter"])),
    "missing": Case(missing, {"assert_consumed", "assert_existing_objects_matched"},
                    unmatched=["model.extra.bias", "model.extra.weight",
                               slot("model.extra.bias"), slot("model.extra.weight")]),
    "extra": Case(extra, {"assert_consumed"}, unused=["cfg.a"]),
    "pending": Case(pending, {"assert_consumed"}, waiting=sorted([B, W, *ALL_SLOTS]),
                    matched=["cfg.a", "optimizer", "save_counter"]),
    "pending_lazy": Case(pending_lazy, {"assert_consumed"},
                         waiting=sorted([B, W, *ALL_SLOTS])),
    "nothing": Case(nothing, {"assert_consumed", "assert_existing_objects_matched",
                              "assert_nontrivial_match"},
                    unmatched=["other.bias", "other.weight"],
                    waiting=sorted(["cfg.a", B, W, "optimizer", *ALL_SLOTS, "save_counter"]),
                    matched=[]),
    "nothing_but_counter": Case(nothing_but_counter,
                                {"assert_consumed", "assert_existing_objects_matched"},
                                unmatched=["other.bias", "other.weight"],
                                waiting=sorted(["cfg.a", B, W, "optimizer", *ALL_SLOTS]),
                                matched=["save_counter"]),
    "no_checkpoint": Case(no_checkpoint, {"assert_consumed", "assert_existing_objects_matched",
                                          "assert_nontrivial_match"}, matched=[]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_match_report(path, case: str) -> None:
    c = CASES[case]
    report = c.build(path).report()
    assert isinstance(report, MatchReport)
    assert report.unused_in_checkpoint == c.unused
    assert report.unmatched_live == c.unmatched
    assert report.pending == c.waiting
    if c.matched is not None:
        assert report.matched == c.matched


@pytest.mark.parametrize("assertion", ASSERTIONS)
@pytest.mark.parametrize("case", list(CASES))
def test_assertion(path, case: str, assertion: str) -> None:
    c = CASES[case]
    status = c.build(path)
    check = getattr(status, assertion)
    if assertion not in c.fails:
        assert check() is status
        return
    with pytest.raises(UnmatchedError) as err:
        check()
    e = err.value
    msg = str(e)
    listed = {"assert_consumed": c.unused + c.unmatched + c.waiting,
              "assert_existing_objects_matched": c.unmatched}.get(assertion, [])
    for item in listed:
        assert f"\n    {item}" in msg, f"{item!r} not listed in:\n{msg}"
    if case != "no_checkpoint":
        assert (e.unused_in_checkpoint, e.unmatched_live, e.pending) == (c.unused, c.unmatched,
                                                                       c.waiting)


def test_pending_values_land_and_then_everything_passes(path) -> None:
    model = Small()
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    ckpt = Checkpoint(model=model, optimizer=opt, cfg={"a": 0})
    status = ckpt.restore(path)
    with pytest.raises(UnmatchedError):
        status.assert_consumed()
    model.fc = nn.Linear(2, 2)
    opt.add_param_group({"params": list(model.fc.parameters())})
    for assertion in ASSERTIONS:
        getattr(status, assertion)()
    assert status.report() == MatchReport(CASES["exact"].matched, [], [], [])


def test_lazy_pending_lands_at_first_forward(path) -> None:
    model = Small(nn.LazyLinear(2))
    status = Checkpoint(model=model, optimizer=sgd(model), cfg={"a": 0}).restore(path)
    model.fc(torch.ones(1, 2))
    for assertion in ASSERTIONS:
        getattr(status, assertion)()
    assert status.report() == MatchReport(CASES["exact"].matched, [], [], [])
