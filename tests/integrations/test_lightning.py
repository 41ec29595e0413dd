"""TorchckptCheckpointIO with the real lightning package: save, top-k removal, exact resume."""

from __future__ import annotations

import os
import warnings

import pytest
import torch

L = pytest.importorskip("lightning")  # the test extra installs it

from torchckpt.errors import UntrackableError  # noqa: E402
from torchckpt.integrations.lightning import TorchckptCheckpointIO  # noqa: E402

STEPS_PER_EPOCH = 4


class Regressor(L.LightningModule):
    def __init__(self, hidden: int = 8, note: object = "plain") -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, hidden), torch.nn.Tanh(),
                                       torch.nn.Linear(hidden, 1))
        self.losses: list[float] = []

    def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.losses.append(loss.item())
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self):  # noqa: ANN201
        opt = torch.optim.Adam(self.parameters(), lr=0.01)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)]

    def on_save_checkpoint(self, checkpoint) -> None:  # noqa: ANN001
        checkpoint["user.key/with 'odd' {chars}"] = {"count": 3, "pi": 3.141592653589793}


def loader() -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(STEPS_PER_EPOCH * 8, 4, generator=g)
    y = x.sum(1, keepdim=True) ** 2
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)


def trainer(root, epochs: int, **callbacks_kw) -> L.Trainer:
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=str(root), save_last=True, **callbacks_kw)
    return L.Trainer(max_epochs=epochs, plugins=[TorchckptCheckpointIO()], callbacks=[ckpt],
                     accelerator="cpu", devices=1, deterministic=True, logger=False,
                     enable_progress_bar=False, enable_model_summary=False,
                     default_root_dir=str(root))


def fit(root, epochs: int, ckpt_path: str | None = None, **kw) -> Regressor:
    torch.manual_seed(1)
    model = Regressor()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer(root, epochs, **kw).fit(model, loader(), ckpt_path=ckpt_path)
    return model


def test_resumed_run_has_the_same_losses_bit_for_bit(tmp_path) -> None:
    whole = fit(tmp_path / "whole", epochs=4)
    first = fit(tmp_path / "cut", epochs=2)
    last = str(tmp_path / "cut" / "last.ckpt")
    assert os.path.isfile(last + ".index") and not os.path.exists(last)
    resumed = fit(tmp_path / "cut", epochs=4, ckpt_path=last)
    assert len(whole.losses) == 4 * STEPS_PER_EPOCH
    assert first.losses + resumed.losses == whole.losses  # float equality: bit for bit


def test_checkpoint_dictionary_round_trips_with_its_types(tmp_path) -> None:
    fit(tmp_path, epochs=1)
    ckpt = TorchckptCheckpointIO().load_checkpoint(str(tmp_path / "last.ckpt"))
    assert ckpt["epoch"] == 0 and ckpt["global_step"] == STEPS_PER_EPOCH
    assert type(ckpt["state_dict"]).__name__ == "OrderedDict"
    assert ckpt["state_dict"]["net.0.weight"].shape == (8, 4)
    opt = ckpt["optimizer_states"][0]
    assert sorted(opt["state"]) == [0, 1, 2, 3]  # int keys stay ints
    assert opt["param_groups"][0]["betas"] == (0.9, 0.999)  # tuples stay tuples
    assert ckpt["hyper_parameters"] == {"hidden": 8, "note": "plain"}
    assert ckpt["user.key/with 'odd' {chars}"] == {"count": 3, "pi": 3.141592653589793}
    assert any(k.startswith("ModelCheckpoint{") for k in ckpt["callbacks"])
    assert ckpt["lr_schedulers"][0]["step_size"] == 3


def test_save_top_k_removes_every_file_of_a_removed_checkpoint(tmp_path) -> None:
    fit(tmp_path, epochs=4, monitor="train_loss", save_top_k=1, mode="max")
    names = sorted(os.listdir(tmp_path))
    prefixes = {n.split(".ckpt")[0] + ".ckpt" for n in names if ".ckpt" in n}
    assert len(prefixes) == 2, names  # the best one and last
    for p in prefixes:
        assert sorted(n for n in names if n.startswith(p)) == [
            p + ".data-00000-of-00001", p + ".index"], names


def test_unstorable_hyperparameter_names_its_place(tmp_path) -> None:
    torch.manual_seed(1)
    model = Regressor(note=object())
    with pytest.raises(UntrackableError, match=r"\['hyper_parameters'\]\['note'\]"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer(tmp_path, 1).fit(model, loader())


def test_storage_options_per_call_are_refused_as_lightning_does(tmp_path) -> None:
    with pytest.raises(TypeError, match="storage_options"):
        TorchckptCheckpointIO().save_checkpoint({}, str(tmp_path / "x"), storage_options={})


@pytest.mark.tf
def test_tensorflow_opens_a_lightning_checkpoint(tmp_path, tf) -> None:
    model = fit(tmp_path, epochs=1)
    reader = tf.train.load_checkpoint(str(tmp_path / "last.ckpt"))
    w = reader.get_tensor("state_dict/net..0..weight/.ATTRIBUTES/VARIABLE_VALUE")
    assert (w == model.net[0].weight.detach().numpy()).all()
