"""signals.py: SIGTERM and SIGUSR1 stop a Lightning fit at a step's end, each decided on its own."""

import os
import signal

import pytest
import torch
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.utilities.exceptions import SIGTERMException

from ccexp.signals import lightning_stops_itself, raise_on_sigterm, raise_sigterm


class Tiny(LightningModule):
    """A linear layer trained on random numbers; SIGUSR1 sent to itself at step 1."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.steps_ended: list[int] = []

    def training_step(self, batch, batch_idx):
        if self.global_step == 1:
            os.kill(os.getpid(), signal.SIGUSR1)
        loss = self.layer(batch).pow(2).mean()
        self.steps_ended.append(self.global_step)  # not reached where the signal raises mid-step
        return loss

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.randn(16, 4), batch_size=2)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.fixture
def launcher_owns_sigterm():
    """A launcher's own SIGTERM handler (submitit's, which lets SLURM's requeue work); SIGUSR1 default."""
    calls: list[int] = []
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(signum))
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    yield calls
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


def test_sigusr1_stops_at_a_steps_end_when_a_launcher_owns_sigterm(launcher_owns_sigterm):
    """With a launcher's handler on SIGTERM, ours went on SIGUSR1 but lightning_stops_itself did
    nothing, so SIGUSR1 in training raised in the middle of the step (a checkpoint half written).
    SIGUSR1 is now decided on its own: the step ends, then the run stops naming SIGUSR1; the
    launcher's SIGTERM handler is not called for it and is in place before and after."""
    launcher = signal.getsignal(signal.SIGTERM)
    restore = raise_on_sigterm()
    try:
        assert signal.getsignal(signal.SIGTERM) is launcher and signal.getsignal(signal.SIGUSR1) is raise_sigterm
        model = Tiny()
        trainer = Trainer(max_steps=6, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                          enable_model_summary=False, accelerator="cpu")
        with pytest.raises(SIGTERMException) as stopped, lightning_stops_itself():
            trainer.fit(model)
        assert stopped.value.args == (signal.SIGUSR1,)
        assert model.steps_ended == [0, 1] and trainer.global_step == 2
        assert launcher_owns_sigterm == []
        assert signal.getsignal(signal.SIGTERM) is launcher and signal.getsignal(signal.SIGUSR1) is raise_sigterm
    finally:
        restore()
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL


def test_sigusr1_outside_lightnings_loop_stops_at_once(launcher_owns_sigterm):
    """Inside the context but before Lightning installs its handler (batches being built): at once."""
    restore = raise_on_sigterm()
    try:
        with pytest.raises(SIGTERMException) as stopped, lightning_stops_itself():
            os.kill(os.getpid(), signal.SIGUSR1)
        assert stopped.value.args == (signal.SIGUSR1,)
        assert launcher_owns_sigterm == []
    finally:
        restore()
