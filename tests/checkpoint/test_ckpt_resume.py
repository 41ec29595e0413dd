"""Torch-to-torch restores are bit-exact.

(a) For each of Adam, AdamW, SGD (momentum) and RMSprop, with an LR scheduler,
a CPU GradScaler and a data generator: train K steps, save, train N more (the
reference). A *fresh interpreter* builds different objects, restores, trains N
steps; every parameter, buffer, optimizer slot, learning rate, loss scale and
generator state must equal the reference bit for bit.

(b) Optimizer state is matched by parameter identity: param groups that list
the parameters in another order, and an optimizer with an extra parameter
(which gets no state), both restore right.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch
from ckpt_helpers import OPTIMIZERS, make_run, state_arrays

from processes import run_isolated
from torchckpt import Checkpoint, UnmatchedError

K, N = 3, 3
SCRIPT = os.path.join(os.path.dirname(__file__), "resume_in_fresh_process.py")


def assert_bitwise_equal(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(ref)
    for key in ref:
        assert got[key].dtype == ref[key].dtype and got[key].shape == ref[key].shape, key
        assert got[key].tobytes() == ref[key].tobytes(), f"{key} differs after resuming"


@pytest.fixture(scope="module")
def fresh_process_results(tmp_path_factory: pytest.TempPathFactory):
    """Reference states, and the states a fresh interpreter reached after restoring."""
    d = tmp_path_factory.mktemp("resume")
    refs, jobs = {}, []
    for name in OPTIMIZERS:
        run = make_run(name, seed=1)
        run.train(K)
        prefix = Checkpoint(**run.objects()).save(str(d / f"{name}-ckpt"))
        run.train(N)
        refs[name] = state_arrays(run)
        jobs.append(f"{name}={prefix}")
    proc = run_isolated([sys.executable, SCRIPT, str(d), str(N), *jobs],
                        timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = {}
    for name in OPTIMIZERS:
        with np.load(d / f"{name}.npz", allow_pickle=False) as f:
            got[name] = dict(f)
    return refs, got


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_fresh_process_continues_bitwise(fresh_process_results, name: str) -> None:
    refs, got = fresh_process_results
    ref = refs[name]
    assert any(k.startswith("opt.") for k in ref)  # slots really were exercised
    assert "model.bn.num_batches_tracked" in ref and "model.lstm.weight_hh_l0" in ref
    assert_bitwise_equal(ref, got[name])


def test_param_groups_in_another_order(tmp_path) -> None:
    def two_groups(m):
        ws = [p for n, p in m.named_parameters() if "weight" in n]
        rest = [p for n, p in m.named_parameters() if "weight" not in n]
        return [{"params": ws, "lr": 1e-2}, {"params": rest, "lr": 3e-3}]

    def two_groups_reversed(m):
        return [{"params": list(reversed(g["params"])), "lr": 0.5} for g in two_groups(m)]

    run = make_run("adam", seed=1, groups=two_groups)
    run.train(K)
    prefix = Checkpoint(**run.objects()).save(str(tmp_path / "ckpt"))
    run.train(N)

    fresh = make_run("adam", seed=7, groups=two_groups_reversed)
    order = [id(p) for g in fresh.optimizer.param_groups for p in g["params"]]
    assert order != [id(p) for g in two_groups(fresh.model) for p in g["params"]]
    Checkpoint(**fresh.objects()).restore(prefix).assert_consumed()
    assert [g["lr"] for g in fresh.optimizer.param_groups] == [1e-2 * 0.5, 3e-3 * 0.5]
    fresh.train(N)
    assert_bitwise_equal(state_arrays(run), state_arrays(fresh))


def test_extra_parameter_gets_no_state(tmp_path) -> None:
    run = make_run("adam", seed=1)
    run.train(K)
    saved = {n: {k: v.clone() for k, v in run.optimizer.state[p].items()}
             for n, p in run.model.named_parameters()}
    prefix = Checkpoint(**run.objects()).save(str(tmp_path / "ckpt"))
    run.train(N)

    def with_extra(m):
        m.extra = torch.nn.Linear(2, 2)  # not used by forward: it never gets a gradient
        params = [p for n, p in m.named_parameters() if not n.startswith("extra")]
        return params[:3] + list(m.extra.parameters()) + params[3:]

    fresh = make_run("adam", seed=7, groups=with_extra)
    status = Checkpoint(**fresh.objects()).restore(prefix)
    for n, p in fresh.model.named_parameters():
        if n.startswith("extra"):
            assert n not in saved and len(fresh.optimizer.state[p]) == 0
        else:
            assert fresh.optimizer.state[p].keys() == saved[n].keys()
            for k, v in saved[n].items():
                assert torch.equal(fresh.optimizer.state[p][k], v), (n, k)
    with pytest.raises(UnmatchedError) as err:
        status.assert_existing_objects_matched()
    assert err.value.unmatched_live == ["model.extra.bias", "model.extra.weight"]
    status.expect_partial()

    fresh.train(N)
    ref, got = state_arrays(run), state_arrays(fresh)
    got = {k: v for k, v in got.items() if ".extra." not in k}
    assert_bitwise_equal(ref, got)
