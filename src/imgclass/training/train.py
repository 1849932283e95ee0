"""The training loop: optimiser, per-batch schedule, loss, freeze -> unfreeze, early stopping,
checkpoints that survive a kill, and tracking.

A run is a list of phases. With pretrained weights and `freeze_epochs`, phase one trains the head
alone; phase two unfreezes and trains everything with discriminative learning rates (backbone at
`backbone_lr_ratio` of the head's), as fastai's fine_tune does. Each phase has its own schedule, and
takes at least a minimum number of optimizer steps (`head_steps`, `min_steps`): on a few dozen images
an epoch is a handful of steps, so epochs are raised until the steps suffice.

The head-only phase fits the head to the features of the images as they are (no augmentation, as a
linear probe before fine-tuning): the backbone's output for an image is the same every epoch, so it
is computed once (backbone in eval mode) and the head trains on it alone, for hundreds of steps at
the cost of milliseconds each: see `FeatureStepper`.

The best epoch (by validation accuracy, ties broken by validation loss, or by validation loss) is
what is saved, with the preprocessing and the mapping from logits to probabilities that the loss
implies (preprocess.Preprocessing). What a run carries between epochs, and what a killed run resumes
from, is in run_state.py and resume.py.

Under torchrun the same loop runs in every process with DistributedDataParallel: see distributed.py.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, TensorDataset

from imgclass.config.params import ModelParams, Params, ParamsError
from imgclass.data.image_cache import load_split
from imgclass.devices import resolve_device
from imgclass.model import models
from imgclass.model.checkpoint import save_checkpoint
from imgclass.model.preprocess import Preprocessing
from imgclass.progress import Progress
from imgclass.tracking.mlflow_runs import Tracker
from imgclass.training import resume
from imgclass.training.augment import augmentation, batch_mixing
from imgclass.training.distributed import World, process_group
from imgclass.training.losses import (
    balanced_class_weights,
    fit_temperature,
    make_loss,
    needs_temperature,
    probability_output,
)
from imgclass.training.run_state import EarlyStopper, RunState


class ArrayDataset(Dataset):
    """uint8 N x H x W x 3 images (memory-mapped) -> (uint8 3 x H x W tensor, label). Augmentation
    happens later, per batch on the device (Stepper.augment)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return torch.from_numpy(np.array(self.images[i])).permute(2, 0, 1), int(self.labels[i])


@dataclass
class Phase:
    name: str        # "frozen" or "unfrozen"
    epochs: int


def plan_phases(cfg: ModelParams, steps_per_epoch: int) -> list[Phase]:
    """The phases and their epochs. Each phase takes at least its minimum number of optimizer steps
    (head_steps for the head alone, min_steps after), so that training length follows the data.
    epochs: 0 leaves the head-only phase alone: a linear probe of the pretrained features."""
    phases = [Phase("frozen", epochs_for(cfg.freeze_epochs, cfg.head_steps, steps_per_epoch))] if cfg.freeze_epochs else []
    if cfg.epochs:
        phases.append(Phase("unfrozen", epochs_for(cfg.epochs, cfg.min_steps, steps_per_epoch)))
    return phases


def epochs_for(epochs: int, min_steps: int, steps_per_epoch: int) -> int:
    return max(epochs, math.ceil(min_steps / max(steps_per_epoch, 1)))


def steps_per_epoch(num_images: int, batch_size: int, world: World) -> int:
    """Batches per epoch in each process (DistributedSampler pads every process to the same share)."""
    return math.ceil(math.ceil(num_images / world.size) / batch_size)


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int, num_workers: int,
                device: torch.device, world: World = World()) -> DataLoader:
    """Batches of this process's share of `dataset` (all of it for a single process).

    Shuffling draws one permutation per seed and epoch (`loader.sampler.set_epoch`) and deals it out
    round-robin (DistributedSampler), so N processes with batch_size / N each see together the global
    batches one process sees. Workers, when asked for, persist across epochs."""
    if shuffle:
        sampler = DistributedSampler(dataset, num_replicas=world.size, rank=world.rank, shuffle=True, seed=seed)
    else:
        sampler = range(world.rank, len(dataset), world.size)  # in order, unpadded: every image once
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, generator=torch.Generator().manual_seed(seed),
                      num_workers=num_workers, pin_memory=device.type == "cuda",
                      persistent_workers=num_workers > 0, drop_last=False)


def param_groups(model: nn.Module, cfg: ModelParams, phase: Phase) -> list[dict]:
    head = models.head_parameters(model)
    if phase.name == "frozen":
        return [{"params": head, "lr": cfg.lr, "name": "head"}]
    if cfg.weights == "none":
        return [{"params": list(model.parameters()), "lr": cfg.lr, "name": "all"}]
    return [{"params": models.backbone_parameters(model), "lr": cfg.lr * cfg.backbone_lr_ratio, "name": "backbone"},
            {"params": head, "lr": cfg.lr, "name": "head"}]


def make_optimizer(groups: list[dict], cfg: ModelParams) -> torch.optim.Optimizer:
    wd = cfg.weight_decay
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               weight_decay=wd)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, weight_decay=wd)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, weight_decay=wd)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, momentum=cfg.momentum, weight_decay=wd)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose sgd, adam, adamw or rmsprop")


def make_schedule(optimizer: torch.optim.Optimizer, cfg: ModelParams, steps_per_epoch: int,
                  epochs: int) -> torch.optim.lr_scheduler.LRScheduler:
    """A schedule stepped after every batch."""
    total = max(1, steps_per_epoch * epochs)
    if cfg.schedule == "onecycle":
        pct_start = min(0.3, max(cfg.warmup_epochs / epochs, 0.05)) if cfg.warmup_epochs else 0.25
        # OneCycleLR divides by each phase's length in steps: a handful of steps needs 2 per phase.
        total = max(total, 4)
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=total,
            pct_start=min(max(pct_start, 2 / total), 0.5))
    if cfg.schedule == "cosine":
        warmup = int(cfg.warmup_epochs * steps_per_epoch)
        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    if cfg.schedule == "step":
        every = cfg.step_size * steps_per_epoch
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cfg.gamma ** (step // every))
    if cfg.schedule == "none":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    raise ValueError(f"unknown schedule {cfg.schedule!r}; choose onecycle, cosine, step or none")


def autocast(device: torch.device, enabled: bool):
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=enabled and device.type in ("cuda", "cpu"))


@dataclass
class Stepper:
    """Everything one epoch needs, bundled so run_epoch stays short.

    `network` is what training steps call: `model` itself, or `model` wrapped for the phase by
    `for_phase` (DistributedDataParallel, which averages gradients across processes; torch.compile).
    Evaluation calls `model`: no collectives, so each process may see a different number of batches."""
    model: nn.Module
    prep: Preprocessing
    loss_fn: object
    device: torch.device
    cfg: ModelParams
    augment: object = None  # augment.augmentation: whole batches, on the device
    mixing: object = None
    scaler: object = None
    world: World = World()
    network: nn.Module | None = None

    def __post_init__(self):
        if self.network is None:
            self.network = self.model

    def for_phase(self) -> "Stepper":
        """This stepper with the network training steps call, built after the phase's freezing: DDP
        registers the parameters that need gradients, and torch.compile traces what runs."""
        network = self.world.wrap(self.model, self.device)
        if self.cfg.compile:
            network = torch.compile(network)
        return dataclasses.replace(self, network=network)

    def net(self, training: bool) -> nn.Module:
        return self.network if training else self.model

    def forward(self, images: torch.Tensor, training: bool = False) -> torch.Tensor:
        """A uint8 image batch on the device -> logits."""
        memory = torch.channels_last if self.cfg.channels_last else torch.contiguous_format
        return self.net(training)(self.prep.normalize(images).contiguous(memory_format=memory))


@dataclass
class FeatureStepper(Stepper):
    """Trains the head alone on cached head inputs: batches are feature vectors, not images, and
    `model` is the dropout that precedes the head followed by the head (shared with the network)."""

    def forward(self, features: torch.Tensor, training: bool = False) -> torch.Tensor:
        return self.net(training)(features)


def run_epoch(s: Stepper, loader: DataLoader, optimizer=None, scheduler=None, frozen=False, desc="") -> dict:
    """One pass over this process's share; trains when an optimizer is given. Returns mean loss and
    accuracy over all processes."""
    training = optimizer is not None
    s.net(training).train(training)
    if training and frozen:
        models.apply_frozen_mode(s.model)
    elif training and s.cfg.batchnorm == "frozen":  # the pretrained statistics, not those of 16 photos
        models.freeze_batchnorm_statistics(s.model)
    total_loss, correct, seen = 0.0, 0, 0
    with torch.set_grad_enabled(training):
        for images, labels in reported(loader, desc, s.world):
            images = images.to(s.device, non_blocking=True)
            labels = labels.to(s.device, non_blocking=True)
            targets = labels
            if training and s.augment is not None:
                images = s.augment(images)  # 0..255 floats, which normalize accepts as well as uint8
            if training and s.mixing is not None:
                # MixUp blends pixels, which uint8 cannot hold.
                images, targets = s.mixing(images.float(), labels)
            with autocast(s.device, s.cfg.amp):
                logits = s.forward(images, training)
                loss = s.loss_fn(logits.float(), targets)
            if training:
                step(s, loss, optimizer)
                scheduler.step()
            total_loss += loss.item() * len(labels)
            correct += (logits.argmax(dim=1) == labels).sum().item()
            seen += len(labels)
    total_loss, correct, seen = s.world.sum([total_loss, correct, seen], s.device)
    return {"loss": total_loss / max(seen, 1), "accuracy": correct / max(seen, 1)}


def reported(loader: DataLoader, desc: str, world: World, shared: bool = True) -> Iterator:
    """The loader's batches, reporting images done, rate and ETA from rank 0 alone (N processes would
    print every line N times). A loader `shared` among the processes counts for all of them: rank 0's
    images times their number, the shares being equal to within one image."""
    if not world.is_main:
        yield from loader
        return
    processes = world.size if shared else 1
    with Progress(len(loader.sampler) * processes, desc) as progress:
        for images, labels in loader:
            yield images, labels
            progress.update(len(labels) * processes)


def step(s: Stepper, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
    optimizer.zero_grad(set_to_none=True)
    if s.scaler is not None:
        s.scaler.scale(loss).backward()
        s.scaler.unscale_(optimizer)
    else:
        loss.backward()
    if s.cfg.grad_clip:
        nn.utils.clip_grad_norm_(s.model.parameters(), s.cfg.grad_clip)
    if s.scaler is not None:
        s.scaler.step(optimizer)
        s.scaler.update()
    else:
        optimizer.step()


def caches_features(phase: Phase, s: Stepper) -> bool:
    """The head-only phase sees every image unaltered, so one forward pass of the backbone serves all
    its epochs."""
    return phase.name == "frozen"


def saves_resume_state(s: Stepper, phase_epoch: int, phase: Phase) -> bool:
    """After every epoch, except inside the head phase on cached features: there an epoch takes
    milliseconds while the checkpoint holds the whole network (20 MB for efficientnet_lite0), so it is
    saved once, at the phase's end; a run killed before that redoes seconds of work."""
    return not isinstance(s, FeatureStepper) or phase_epoch == phase.epochs - 1


def for_head_only(s: Stepper) -> Stepper:
    """The head-only phase fits the head to the backbone's features of the images as they are (a
    linear probe, as in LP-FT): augmentation and mixing are for the phase that trains everything."""
    return dataclasses.replace(s, augment=None, mixing=None)


def dropout_before_head(model: nn.Module) -> float:
    """The dropout rate on the head's input in training: timm applies it functionally with its
    `drop_rate`; torchvision and the scratch networks hold it as their last nn.Dropout."""
    if isinstance(getattr(model, "drop_rate", None), float):
        return model.drop_rate
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    return dropouts[-1].p if dropouts else 0.0


@torch.no_grad()
def head_inputs(s: Stepper, dataset: Dataset, desc: str) -> TensorDataset:
    """(features, labels) of every image: what the head receives, captured by a hook, with the whole
    network in eval mode (backbone dropout and stochastic depth off, BatchNorm statistics fixed)."""
    head = s.model.get_submodule(models.head_name(s.model))
    batches: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda module, args: batches.append(args[0].float().cpu()))
    labels = []
    s.model.eval()
    try:
        loader = make_loader(dataset, s.cfg.batch_size * 2, False, 0, s.cfg.num_workers, s.device)
        for images, y in reported(loader, desc, s.world, shared=False):
            with autocast(s.device, s.cfg.amp):
                s.forward(images.to(s.device, non_blocking=True))
            labels.append(y)
    finally:
        hook.remove()
    return TensorDataset(torch.cat(batches), torch.cat(labels))


def feature_phase(s: Stepper, train_ds: Dataset, val_ds: Dataset) -> tuple[FeatureStepper, Dataset, DataLoader]:
    """A stepper, training set and validation loader that train the head on cached features.

    Equivalent to the uncached frozen phase (same batches, shuffling, dropout before the head, optimizer
    and schedule on the same head parameters) except that the backbone runs in eval mode once, so
    dropout or stochastic depth inside the backbone (torchvision's efficientnet_b0) is off. The features
    stay in host memory: N x head width floats (7,000 images x 1,280 = 36 MB for efficientnet_lite0).
    Under torchrun every process computes all of them: one pass, then each trains on its share."""
    started = time.perf_counter()
    train_features = head_inputs(s, train_ds, "frozen phase: caching train features")
    val_features = head_inputs(s, val_ds, "frozen phase: caching validation features")
    s.world.print(f"frozen phase: cached {train_features.tensors[0].shape[1]}-d features of {len(train_features)} "
                  f"train and {len(val_features)} val images in {time.perf_counter() - started:.1f}s")
    head = nn.Sequential(nn.Dropout(dropout_before_head(s.model)), s.model.get_submodule(models.head_name(s.model)))
    # In-memory tensors: worker processes would only add their start-up time.
    cfg = s.cfg.model_copy(update={"num_workers": 0})
    feature_stepper = FeatureStepper(head, s.prep, s.loss_fn, s.device, cfg, scaler=s.scaler, world=s.world)
    val_loader = make_loader(val_features, cfg.batch_size * 2, False, 0, 0, s.device, s.world)
    return feature_stepper, train_features, val_loader


@torch.no_grad()
def calibrated(s: Stepper, prep: Preprocessing, val_ds: Dataset) -> Preprocessing:
    """`prep` with the temperature that turns the model's validation logits into the best-fitting
    probabilities (every process computes it on all of the validation split: no collectives)."""
    s.model.eval()
    logits, labels = [], []
    for images, y in make_loader(val_ds, s.cfg.batch_size * 2, False, 0, 0, s.device):
        with autocast(s.device, s.cfg.amp):
            logits.append(s.forward(images.to(s.device)).float().cpu())
        labels.append(y)
    temperature = fit_temperature(torch.cat(logits), torch.cat(labels), prep.output)
    s.world.print(f"probabilities: temperature {temperature:.3g} fitted on {len(val_ds)} validation images")
    return dataclasses.replace(prep, temperature=temperature)


# Below this many validation images one image moves accuracy by over a point: a lucky epoch can win.
FEW_VALIDATION_IMAGES = 100


def coarse_selection_note(name: str, metric: str, num_val: int) -> str | None:
    """A hint when the kept epoch is chosen on accuracy over a validation split too small to rank epochs:
    on 29 photos a half-trained head (loss 0.47) won on one image over the fine-tuned model (loss 0.15)."""
    if metric != "val_accuracy" or num_val >= FEW_VALIDATION_IMAGES:
        return None
    return (f"{name}: {num_val} validation images move accuracy in steps of {100 / max(num_val, 1):.1f} points; "
            f"models.{name}.early_stopping.metric: val_loss chooses the kept epoch more reliably")


def train_one_epoch(s: Stepper, train_loader: DataLoader, val_loader: DataLoader, optimizer, scheduler,
                    phase: Phase, epoch: int, seed: int, desc: str) -> dict:
    # Seeds fixed by epoch: a resumed run shuffles and augments exactly as an uninterrupted one.
    # The shuffle is shared by all processes (one permutation); augmentation differs per process.
    train_loader.sampler.set_epoch(epoch)
    torch.manual_seed((seed * 1000 + epoch) * s.world.size + s.world.rank)
    train_m = run_epoch(s, train_loader, optimizer, scheduler, frozen=phase.name == "frozen",
                        desc=pass_desc(desc, phase.name))
    val_m = run_epoch(s, val_loader, desc=pass_desc(desc, "validation"))
    metrics = {"train_loss": train_m["loss"], "train_accuracy": train_m["accuracy"],
               "val_loss": val_m["loss"], "val_accuracy": val_m["accuracy"], "lr": optimizer.param_groups[-1]["lr"]}
    s.world.print(f"{desc} {phase.name}: " + " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    return metrics


def pass_desc(epoch_desc: str, part: str) -> str:
    """("cnn_simple 3/8", "unfrozen") -> "cnn_simple epoch 3/8 (unfrozen)": what the progress lines of one
    pass of an epoch start with (the epoch's metric line keeps "cnn_simple 3/8 unfrozen:")."""
    name, _, count = epoch_desc.rpartition(" ")
    return f"{name} epoch {count} ({part})".lstrip()


def train(name: str, params: Params, split_dir: Path, model_dir: Path, resume_dir: Path,
          dvclive_dir: Path, track: bool = True) -> dict:
    """Train model `name` from params; write model_dir/model.pt (best weights + meta). Returns a summary.

    Under torchrun, every process calls this; rank 0 alone tracks and writes files."""
    world = World.from_env()
    device = world.local_device(resolve_device(params.device))
    with process_group(world, device, params.distributed.backend):
        return train_in_process(name, params, split_dir, model_dir, resume_dir, dvclive_dir, track, world, device)


@dataclass
class Run:
    """One model's training, set up: its data, its network, and the Stepper that trains it."""

    name: str
    params: Params
    world: World
    device: torch.device
    model: nn.Module
    stepper: Stepper
    train_ds: ArrayDataset
    val_ds: ArrayDataset
    val_loader: DataLoader
    batch_size: int  # per process

    @property
    def cfg(self) -> ModelParams:
        return self.params.models[self.name]

    @property
    def classes(self) -> list[str]:
        return list(self.params.classes)


def train_in_process(name: str, params: Params, split_dir: Path, model_dir: Path, resume_dir: Path,
                     dvclive_dir: Path, track: bool, world: World, device: torch.device) -> dict:
    """The loop as the README tells it: the head on cached features, then unfrozen epochs; keep the
    best epoch, calibrate, save. A killed run resumes from resume_dir/last.pt."""
    run = prepare_run(name, params, split_dir, world, device)
    stopper = EarlyStopper(run.cfg.early_stopping.metric, run.cfg.early_stopping.patience)
    state = RunState.resume_or_start(resume_dir / "last.pt", resume.fingerprint(params, name, split_dir, world.size),
                                     run.model, stopper, world, name)
    if note := coarse_selection_note(name, stopper.metric, len(run.val_ds)):
        world.print(note)
    tracker = Tracker(name, {"model": name, **run.cfg.model_dump(), "seed": params.seed,
                             "image_size": params.image_size, "classes": ",".join(run.classes)},
                      dvclive_dir, enabled=track and world.is_main, split_dir=split_dir)
    started = time.perf_counter()
    try:
        phases = plan_phases(run.cfg, steps_per_epoch(len(run.train_ds), run.batch_size, world))
        for phase in phases:
            if train_phase(run, phase, state, tracker, total_epochs=sum(p.epochs for p in phases),
                           last=phase is phases[-1]):
                break
        summary, prep = keep_best(run, state, seconds=time.perf_counter() - started)
        if world.is_main:
            save_trained(run, prep, summary, model_dir, tracker)
        tracker.close()
    except BaseException:
        tracker.close("KILLED")
        raise
    if world.is_main:
        state.discard()
    return {**summary, "history": state.history}


def prepare_run(name: str, params: Params, split_dir: Path, world: World, device: torch.device) -> Run:
    """Decode the train and val splits, build the network and its loss, augmentation and mixed precision."""
    cfg = params.models[name]
    # params.yaml checks nproc_per_node; this checks the world torchrun actually started (maybe several nodes).
    batch_size = world.local_batch_size(cfg.batch_size, f"models.{name}.batch_size")
    seed_everything(params.seed)
    classes = list(params.classes)
    if cfg.binary_head == "one_logit" and len(classes) != 2:
        raise ParamsError(f"models.{name}.binary_head: one_logit needs exactly 2 classes; classes has {len(classes)}")
    train_ds = ArrayDataset(*load_split(split_dir, "train", classes, params.image_size))
    val_ds = ArrayDataset(*load_split(split_dir, "val", classes, params.image_size))
    # Normalised as the pretrained weights were trained (timm's pretrained_cfg: [-1, 1] for the
    # EfficientNet-Lites and many ViTs), ImageNet's statistics otherwise; saved with the model.
    prep = Preprocessing(image_size=params.image_size, input_size=params.input_size(name),
                         output=probability_output(cfg.loss), **models.input_normalization(cfg.arch))
    model = models.build_model(cfg.arch, len(classes), cfg.weights, cfg.dropout, cfg.binary_head).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    weight = balanced_class_weights(train_ds.labels, len(classes)).to(device) if cfg.class_weights == "balanced" else None
    stepper = Stepper(model, prep, make_loss(cfg.loss, weight, label_smoothing=cfg.label_smoothing,
                                             focal_gamma=cfg.focal_gamma),
                      device, cfg, augment=augmentation(cfg.augment, params.image_size),
                      mixing=batch_mixing(cfg.augment, len(classes)),
                      scaler=torch.amp.GradScaler("cuda") if cfg.amp and device.type == "cuda" else None,
                      world=world)
    val_loader = make_loader(val_ds, cfg.batch_size * 2, False, 0, cfg.num_workers, device, world)
    return Run(name, params, world, device, model, stepper, train_ds, val_ds, val_loader, batch_size)


def train_phase(run: Run, phase: Phase, state: RunState, tracker: Tracker, total_epochs: int, last: bool) -> bool:
    """Train one phase's epochs with its own optimizer and schedule; True when early stopping ends the run.
    The frozen phase trains the head alone, on the backbone's features computed once."""
    cfg, world = run.cfg, run.world
    models.set_backbone_frozen(run.model, phase.name == "frozen")
    runner = for_head_only(run.stepper) if phase.name == "frozen" else run.stepper
    train_ds, val_loader = run.train_ds, run.val_loader
    if caches_features(phase, runner) and state.phase_starts(phase.epochs):
        runner, train_ds, val_loader = feature_phase(runner, run.train_ds, run.val_ds)
    runner = runner.for_phase()
    train_loader = make_loader(train_ds, run.batch_size, True, run.params.seed, runner.cfg.num_workers, run.device,
                               world)
    optimizer = make_optimizer(param_groups(run.model, cfg, phase), cfg)
    scheduler = make_schedule(optimizer, cfg, len(train_loader), phase.epochs)
    if state.epoch >= state.finished:
        state.stopper.bad_epochs = 0  # patience counts within a phase
    for phase_epoch in range(phase.epochs):
        if state.skip_finished(optimizer, scheduler):
            continue
        desc = f"{run.name} {state.epoch + 1}/{total_epochs}"
        metrics = train_one_epoch(runner, train_loader, val_loader, optimizer, scheduler, phase, state.epoch,
                                  run.params.seed, desc=desc)
        tracker.log_epoch(state.epoch, metrics)
        state.record(phase.name, metrics, run.model)
        if world.is_main and saves_resume_state(runner, phase_epoch, phase):
            state.save(run.model, optimizer, scheduler)
        if last and state.stopper.should_stop():
            world.print(f"{run.name}: early stop, no {state.stopper.metric} improvement in {state.stopper.patience} epochs")
            return True
    return False


def keep_best(run: Run, state: RunState, seconds: float) -> tuple[dict, Preprocessing]:
    """Load the best epoch's weights and fit the temperature where the loss needs one: the run's summary
    and the preprocessing to save with the model."""
    run.model.load_state_dict(state.best_state)
    prep = run.stepper.prep
    if needs_temperature(run.cfg.loss, run.cfg.label_smoothing):
        prep = calibrated(run.stepper, prep, run.val_ds)
    best = state.best()
    return {"best_epoch": state.stopper.best_epoch, "epochs_run": len(state.history),
            "val_accuracy": best["val_accuracy"], "val_loss": best["val_loss"],
            "train_accuracy": best["train_accuracy"], "train_loss": best["train_loss"],
            "train_seconds": round(seconds, 2), "parameters": models.count_parameters(run.model),
            "device": run.device.type, "processes": run.world.size}, prep


def save_trained(run: Run, prep: Preprocessing, summary: dict, model_dir: Path, tracker: Tracker) -> None:
    """model.pt (weights + meta) for the later stages, and the run's summary and model in MLflow."""
    meta = checkpoint_meta(run.name, run.cfg, run.classes, prep, summary, tracker)
    save_checkpoint(model_dir / "model.pt", run.model, meta)
    tracker.log_summary(summary)
    example = prep.normalize(torch.from_numpy(np.array(run.train_ds.images[:2])).permute(0, 3, 1, 2)).numpy()
    tracker.log_model(run.model.cpu().eval(), example, meta)


def checkpoint_meta(name: str, cfg: ModelParams, classes: list[str], prep: Preprocessing, summary: dict,
                    tracker: Tracker) -> dict:
    return {"name": name, "arch": cfg.arch, "classes": classes, "preprocessing": prep.to_dict(),
            "dropout": cfg.dropout, "params": json.loads(cfg.model_dump_json()), "summary": summary,
            "mlflow_run_id": tracker.run.info.run_id if tracker.run else None}
