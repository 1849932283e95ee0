"""What a training run carries from epoch to epoch: each epoch's metrics, the best weights so far and
early stopping, and the bookkeeping that lets a killed run resume where it stopped (resume.py owns the
file and its fingerprint; this owns what goes in it and which epochs a resumed run skips)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from imgclass.training import resume
from imgclass.training.distributed import World


class EarlyStopper:
    """Tracks the best epoch by a validation metric and says when patience has run out."""

    def __init__(self, metric: str, patience: int | None):
        self.metric, self.patience = metric, patience
        self.best_score, self.best_epoch, self.bad_epochs = None, -1, 0

    def improved(self, metrics: dict, epoch: int) -> bool:
        # Accuracy on a few dozen validation images ties often: the lower loss breaks the tie.
        score = [metrics["val_accuracy"], -metrics["val_loss"]] if self.metric == "val_accuracy" else [-metrics[self.metric]]
        if self.best_score is None or score > list(self.best_score):
            self.best_score, self.best_epoch, self.bad_epochs = score, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience

    def state(self) -> dict:
        return {"best_score": self.best_score, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load(self, state: dict) -> None:
        self.best_score, self.best_epoch, self.bad_epochs = state["best_score"], state["best_epoch"], state["bad_epochs"]


@dataclass
class RunState:
    """The epochs run so far and the best weights among them. `finished` epochs were done before an
    interruption; a resumed run walks past them (`skip_finished`) so that every schedule and seed
    lines up with an uninterrupted run's."""

    path: Path  # the resume file, data/checkpoints/M/last.pt
    fingerprint: dict
    stopper: EarlyStopper
    best_state: dict
    history: list[dict] = field(default_factory=list)
    restored: dict | None = None  # the resume file's content, for the optimizer and the schedule
    epoch: int = 0  # epochs walked in this process, finished ones included

    @property
    def finished(self) -> int:
        return len(self.restored["history"]) if self.restored else 0

    @classmethod
    def resume_or_start(cls, path: Path, fingerprint: dict, model: nn.Module, stopper: EarlyStopper,
                        world: World, name: str) -> "RunState":
        """The state saved by an interrupted run of this very configuration (its weights loaded into
        `model`), or a fresh one; either way says which in one line."""
        saved, not_resumed = resume.load_state(path, fingerprint, model)
        if not_resumed:
            world.print(f"{name}: not resuming {path}: {not_resumed}")
        if not saved:
            return cls(path, fingerprint, stopper, copy.deepcopy(model.state_dict()))
        stopper.load(saved["stopper"])
        world.print(f"{name}: resuming after epoch {len(saved['history'])} from {path}")
        return cls(path, fingerprint, stopper, saved["best_state"], list(saved["history"]), saved)

    def phase_starts(self, epochs: int) -> bool:
        """Whether a phase of `epochs` epochs starting now has any left to run."""
        return self.epoch + epochs > self.finished

    def skip_finished(self, optimizer, scheduler) -> bool:
        """Walk past an epoch finished before the interruption; at the last one, restore the optimizer
        and the schedule (the model itself was restored by resume_or_start)."""
        if self.epoch >= self.finished:
            return False
        if self.epoch == self.finished - 1:
            optimizer.load_state_dict(self.restored["optimizer"])
            scheduler.load_state_dict(self.restored["scheduler"])
        self.epoch += 1
        return True

    def record(self, phase: str, metrics: dict, model: nn.Module) -> None:
        """One finished epoch: its metrics, and its weights if it is the best so far."""
        self.history.append({"epoch": self.epoch, "phase": phase, **metrics})
        if self.stopper.improved(metrics, self.epoch):
            self.best_state = copy.deepcopy(model.state_dict())
        self.epoch += 1

    def save(self, model: nn.Module, optimizer, scheduler) -> None:
        resume.save_state(self.path, self.fingerprint, model, optimizer, scheduler, self.best_state,
                          self.stopper.state(), self.history)

    def best(self) -> dict:
        return self.history[self.stopper.best_epoch]

    def discard(self) -> None:
        """A finished run leaves nothing to resume."""
        self.path.unlink(missing_ok=True)
