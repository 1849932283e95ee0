"""The typed schema of params.yaml, validated once.

Every stage calls `load_params()` and reads its own section. Unknown or misspelled keys, wrong types
and impossible values are a `ParamsError` whose one-line message names the key and what to do.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from imgclass.config.architectures import ARCHITECTURES, check_arch, check_library_name, split_name

DEFAULT_PARAMS = Path("params.yaml")


class ParamsError(ValueError):
    """params.yaml is invalid; the message names the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- scrape -----------------------------------------------------------------------------------

class FashionMnistSource(Section):
    root: str = "/usr/share/datasets/fashion-mnist"
    subset: Literal["train", "test", "all"] = "train"


class FolderSource(Section):
    root: str = "/usr/share/tuxpaint/stamps"
    # class name -> glob patterns relative to root (e.g. "animals/mammals/**/*.png").
    mapping: dict[str, list[str]] = Field(default_factory=dict)


class DdgSource(Section):
    queries: list[str] = ["{class} photo", "{class} sun photo", "{class} shade photo"]
    region: str = "wt-wt"
    safesearch: Literal["on", "moderate", "off"] = "moderate"
    size: Optional[Literal["Small", "Medium", "Large", "Wallpaper"]] = None
    type_image: Optional[Literal["photo", "clipart", "gif", "transparent", "line"]] = "photo"
    license_image: Optional[Literal["any", "Public", "Share", "ShareCommercially", "Modify", "ModifyCommercially"]] = None
    backend: str = "auto"
    retries: int = Field(5, ge=0)
    backoff_base: float = Field(2.0, gt=0)
    backoff_max: float = Field(60.0, gt=0)
    pause: float = Field(1.0, ge=0)


class UrlsSource(Section):
    csv: str = "urls.csv"  # in git, beside params.yaml: queued experiments see it


class Download(Section):
    workers: int = Field(8, ge=1)
    timeout: float = Field(10.0, gt=0)
    max_bytes: int = Field(15_000_000, gt=0)
    retries: int = Field(2, ge=0)
    backoff: float = Field(0.5, ge=0)  # seconds before the first retry of a 5xx/timeout; doubles
    max_retry_after: float = Field(30.0, ge=0)  # cap on a server's Retry-After


class ScrapeParams(Section):
    source: Literal["fashion_mnist", "folder", "ddg", "urls"] = "fashion_mnist"
    max_per_class: int = Field(200, ge=1)
    fashion_mnist: FashionMnistSource = FashionMnistSource()
    folder: FolderSource = FolderSource()
    ddg: DdgSource = DdgSource()
    urls: UrlsSource = UrlsSource()
    download: Download = Download()


# --- validate / split -------------------------------------------------------------------------

class ValidateParams(Section):
    min_size: int = Field(32, ge=1)
    max_aspect: float = Field(5.0, ge=1)
    max_pixels: int = Field(89_478_485, gt=0)  # Pillow's own decompression-bomb threshold
    # Hamming distance between 64-bit perceptual hashes; null turns near-duplicate grouping off.
    near_duplicate_distance: Optional[int] = Field(4, ge=0, le=64)
    # The shorter side of data/clean's working copies, which review and split read instead of the
    # originals: auto = the largest size a later stage squashes images to (image_size, review.image_size);
    # a number keeps room for trying larger sizes without decoding the originals again; null = full size.
    working_size: Union[Literal["auto"], int, None] = "auto"

    @field_validator("working_size", mode="before")
    @classmethod
    def _auto_or_pixels(cls, size):
        if size is None or size == "auto" or (isinstance(size, int) and not isinstance(size, bool) and size >= 8):
            return size
        raise ValueError("must be auto, null (full size) or a side of at least 8 pixels")


class SplitParams(Section):
    val: float = Field(0.15, gt=0, lt=1)
    test: float = Field(0.15, gt=0, lt=1)
    min_per_class: int = Field(10, ge=3)

    @model_validator(mode="after")
    def _leaves_training_data(self):
        if self.val + self.test >= 0.9:
            raise ValueError("split.val + split.test must be below 0.9 so that training data remains")
        return self


# --- review -------------------------------------------------------------------------------------

class ReviewParams(Section):
    """Out-of-sample checks of data/clean before the split: wrong labels, off-topic images,
    near-duplicates across classes, low-quality images (review.py). Scores are in [0, 1], higher
    meaning more suspicious; each `*_threshold` flags an issue, each `drop_*` (stricter) auto-drops."""
    model: str = "efficientnet_lite0"  # a registry architecture with pretrained weights: the embedding backbone
    image_size: int = Field(128, ge=16, le=512)  # images are squashed to this size before embedding
    hflip: bool = False       # average each embedding with its mirror image's (twice the embedding time)
    batch_size: int = Field(128, ge=1)
    folds: int = Field(5, ge=2)  # k-fold cross-validation: no image is scored by a model that saw its label
    pca: Optional[int] = Field(128, ge=2)  # components kept before the classifiers (unsupervised); null = none
    classifier: Literal["logistic", "knn", "logistic+knn"] = "logistic+knn"  # probabilities averaged
    knn: int = Field(10, ge=1)  # neighbours for the kNN classifier and for the outlier distance
    label_threshold: float = Field(0.5, ge=0, le=1)      # 1 - p(given class), when cleanlab also flags it
    # Outliers: r / (1 + r), r = interquartile ranges of the kNN distance above its upper quartile
    # (0.63 = cleanlab Datalab's rule, r > 1.7; 0.8 = r > 4): relative to the data's own spread.
    outlier_threshold: float = Field(0.63, ge=0, le=1)
    # Cosine distance between embeddings at or below which two images are near-duplicates; null = off.
    near_duplicate_distance: Optional[float] = Field(0.02, ge=0, le=2)
    low_quality_threshold: float = Field(0.7, ge=0, le=1)  # 1 - cleanvision's dark/blurry/low-information score
    imbalance_ratio: float = Field(0.2, gt=0, le=1)  # a class below this fraction of the largest one is flagged
    auto_drop: Literal["none", "outliers", "label", "all"] = "none"  # all = label + outliers + low quality
    drop_label_score: float = Field(0.9, ge=0, le=1)
    drop_outlier_score: float = Field(0.8, ge=0, le=1)
    drop_low_quality_score: float = Field(0.9, ge=0, le=1)

    @field_validator("model")
    @classmethod
    def _pretrained_backbone(cls, model: str) -> str:
        if split_name(model):
            return check_library_name(model)
        choices = ", ".join(sorted(a for a, kind in ARCHITECTURES.items() if kind != "scratch"))
        if model not in ARCHITECTURES:
            raise ValueError(f"unknown model {model!r}; choose one of {choices}, or timm/<name> or torchvision/<name>")
        if ARCHITECTURES[model] == "scratch":
            raise ValueError(f"{model} has no pretrained weights to embed with; choose one of {choices}")
        return model


# --- models -----------------------------------------------------------------------------------

class Augment(Section):
    hflip: bool = False
    random_resized_crop: Optional[float] = Field(None, gt=0, le=1)  # smallest area scale kept
    rotation: float = Field(0.0, ge=0, le=180)
    color_jitter: float = Field(0.0, ge=0, le=1)
    trivialaugment: bool = False
    mixup: float = Field(0.0, ge=0)   # Beta(alpha, alpha); 0 = off
    cutmix: float = Field(0.0, ge=0)  # Beta(alpha, alpha); 0 = off


class EarlyStopping(Section):
    metric: Literal["val_loss", "val_accuracy"] = "val_accuracy"
    patience: Optional[int] = Field(None, ge=1)  # null = train all epochs, still keep the best


class ModelParams(Section):
    arch: str
    weights: str = "none"  # none | imagenet | path to a checkpoint
    input_size: Optional[int] = Field(None, ge=8)  # default: the top-level image_size
    epochs: int = Field(5, ge=0)  # 0 with freeze_epochs > 0: the head alone (a linear probe), nothing unfrozen
    # Training length follows the data: the unfrozen phase takes at least min_steps optimizer steps,
    # its epochs raised to ceil(min_steps / steps per epoch) when `epochs` would take fewer (a few
    # dozen photos make 2-5 steps an epoch). 0 = exactly `epochs`.
    min_steps: int = Field(100, ge=0)
    # The head-only phase (freeze_epochs > 0) trains on cached backbone features, which costs
    # milliseconds a step: it takes at least head_steps steps, so the head converges before unfreezing.
    head_steps: int = Field(500, ge=0)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    optimizer: Literal["sgd", "adam", "adamw", "rmsprop"] = "adamw"
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(1e-4, ge=0)
    schedule: Literal["onecycle", "cosine", "step", "none"] = "onecycle"
    warmup_epochs: float = Field(0.0, ge=0)
    step_size: int = Field(3, ge=1)
    gamma: float = Field(0.1, gt=0, le=1)
    loss: Literal["cross_entropy", "focal", "multi_margin", "mse", "bce"] = "cross_entropy"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    focal_gamma: float = Field(2.0, ge=0)
    class_weights: Literal["none", "balanced"] = "none"
    # 2 classes only: `one_logit` = one output u, class 1's score u and class 0's -u (with bce: the
    # textbook sigmoid(u) for class 1); `two_logits` = one output per class, as for more classes.
    binary_head: Literal["two_logits", "one_logit"] = "two_logits"
    freeze_epochs: int = Field(0, ge=0)  # > 0: a head-only phase first (on un-augmented images), then all
    backbone_lr_ratio: float = Field(0.1, gt=0, le=1)
    # BatchNorm while everything trains: `train` updates its running statistics from each batch;
    # `frozen` keeps the pretrained ones (no jump in loss at unfreezing, but no better on small photo sets).
    batchnorm: Literal["train", "frozen"] = "train"
    dropout: float = Field(0.2, ge=0, lt=1)
    grad_clip: Optional[float] = Field(None, gt=0)
    amp: bool = False
    channels_last: bool = False
    compile: bool = False  # torch.compile the training step's network (needs a C++ compiler on the CPU)
    num_workers: int = Field(0, ge=0)
    augment: Augment = Augment()
    early_stopping: EarlyStopping = EarlyStopping()

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, arch: str) -> str:
        return check_arch(arch)

    @model_validator(mode="after")
    def _freeze_needs_pretrained(self):
        if self.freeze_epochs and self.weights == "none":
            raise ValueError("freeze_epochs needs pretrained weights (imagenet or a checkpoint); "
                             "set freeze_epochs: 0 for a network trained from scratch")
        if self.epochs == 0 and not self.freeze_epochs:
            raise ValueError("epochs: 0 trains nothing; it means the head alone on pretrained features "
                             "and needs freeze_epochs > 0 (or set epochs > 0)")
        return self


# --- evaluate ---------------------------------------------------------------------------------

class EvaluateParams(Section):
    # Test-time augmentation: `hflip` averages the probabilities of each image and its mirror image;
    # `auto` takes hflip when it is more accurate on the validation split (never the test split).
    # Evaluate reports both validation accuracies; predict, export and serving apply the evaluated choice.
    tta: Literal["none", "hflip", "auto"] = "none"


# --- ensemble / benchmark ---------------------------------------------------------------------

class EnsembleParams(Section):
    members: Optional[list[str]] = None  # default: every model
    tie_break: Optional[str] = None      # default: the member with the best validation accuracy


class BenchmarkParams(Section):
    # Architectures, not entries of `models`: retuning a model must not invalidate the benchmark.
    archs: list[str] = ["cnn_simple"]
    batch_sizes: list[int] = [16, 32, 64, 128, 256]
    devices: list[Literal["cpu", "cuda", "mps"]] = ["cpu", "cuda", "mps"]
    images: int = Field(512, ge=1)      # images per timed repeat
    repeats: int = Field(3, ge=1)
    warmup: int = Field(1, ge=0)

    @field_validator("archs")
    @classmethod
    def _known_archs(cls, archs: list[str]) -> list[str]:
        for arch in archs:
            ModelParams._known_arch(arch)
        return archs


class DistributedParams(Section):
    # > 1: the train stage relaunches itself under torchrun with DistributedDataParallel, one process
    # per GPU (or per share of the CPU cores); each model's batch_size is split across the processes.
    nproc_per_node: int = Field(1, ge=1)
    backend: Literal["auto", "gloo", "nccl"] = "auto"  # auto = nccl on cuda, gloo on cpu
    # > 1: train@M waits at rdzv_endpoint (host:port on the main machine, torchrun's c10d rendezvous)
    # for this many machines. Which machine is which is not a key of this shared file: it is the
    # environment variable IMGCLASS_NODE_RANK (0, the default, on the machine that writes the outputs).
    nnodes: int = Field(1, ge=1)
    rdzv_endpoint: Optional[str] = None

    @field_validator("rdzv_endpoint")
    @classmethod
    def _host_and_port(cls, endpoint: Optional[str]) -> Optional[str]:
        host, _, port = (endpoint or "").rpartition(":")
        if endpoint is not None and not (host and port.isdigit() and 0 < int(port) < 65536):
            raise ValueError("must be host:port, e.g. 10.0.0.1:29400 (the main machine, a port open to the others)")
        return endpoint

    @model_validator(mode="after")
    def _endpoint_for_several_nodes(self):
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ValueError(f"rdzv_endpoint is required with nnodes: {self.nnodes} "
                             "(host:port of the machine with IMGCLASS_NODE_RANK=0)")
        return self

    @property
    def processes(self) -> int:
        return self.nproc_per_node * self.nnodes


# --- the whole file ---------------------------------------------------------------------------

class Params(Section):
    seed: int = 42
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    image_size: int = Field(64, ge=8)
    classes: list[str] = Field(min_length=2)
    scrape: ScrapeParams = ScrapeParams()
    validate_: ValidateParams = Field(ValidateParams(), alias="validate")
    review: ReviewParams = ReviewParams()
    split: SplitParams = SplitParams()
    models: dict[str, ModelParams] = Field(min_length=1)
    evaluate: EvaluateParams = EvaluateParams()
    ensemble: EnsembleParams = EnsembleParams()
    benchmark: BenchmarkParams = BenchmarkParams()
    distributed: DistributedParams = DistributedParams()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("classes")
    @classmethod
    def _distinct_folder_safe(cls, classes: list[str]) -> list[str]:
        for name in classes:
            if not name or name != name.strip() or any(c in name for c in '/\\:*?"<>|') or name.startswith("."):
                raise ValueError(f"class name {name!r} must be a plain folder name (no slashes or leading dot)")
        if len(set(classes)) != len(classes):
            raise ValueError("class names must be distinct")
        return classes

    @model_validator(mode="after")
    def _references_exist(self):
        for name in self.ensemble.members or []:
            if name not in self.models:
                raise ValueError(f"ensemble.members: unknown model {name!r}; models are {', '.join(self.models)}")
        if self.ensemble.tie_break and self.ensemble.tie_break not in self.ensemble_members:
            raise ValueError(f"ensemble.tie_break: {self.ensemble.tie_break!r} is not an ensemble member")
        dist = self.distributed
        for name, model in self.models.items():
            if model.batch_size % dist.processes:
                raise ValueError(f"models.{name}.batch_size: {model.batch_size} cannot be split over "
                                 f"distributed.nproc_per_node={dist.nproc_per_node} x distributed.nnodes="
                                 f"{dist.nnodes} processes; use a multiple of {dist.processes}")
        if self.scrape.source == "folder":
            missing = [c for c in self.classes if c not in self.scrape.folder.mapping]
            if missing:
                raise ValueError(f"scrape.folder.mapping: no folder given for class {missing[0]!r}")
        size = self.validate_.working_size
        if isinstance(size, int) and size < self.squashed_size:
            raise ValueError(f"validate.working_size: {size} is below the {self.squashed_size} px that image_size "
                             "or review.image_size squash images to; raise it, or set auto")
        return self

    @property
    def squashed_size(self) -> int:
        """The largest square a stage squashes data/clean's images to (split: image_size, review: review.image_size)."""
        return max(self.image_size, self.review.image_size)

    @property
    def working_size(self) -> Optional[int]:
        """validate.working_size resolved: the working copies' shorter side, None for full size."""
        size = self.validate_.working_size
        return self.squashed_size if size == "auto" else size

    @property
    def validate(self) -> ValidateParams:  # `validate` is a BaseModel name, hence the alias
        return self.validate_

    @property
    def ensemble_members(self) -> list[str]:
        return list(self.ensemble.members or self.models)

    def input_size(self, model: str) -> int:
        return self.models[model].input_size or self.image_size


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    """Read and validate params.yaml; raise ParamsError naming the first bad key."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: not found; run from the repository root or pass the params file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    return parse_params(raw, source=str(path))


def parse_params(raw: dict, source: str = "params.yaml") -> Params:
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of keys at the top level")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(f"{source}: {_describe(exc.errors()[0], raw)}") from None


def _describe(error: dict, raw: dict) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        parent = _lookup_model(error["loc"][:-1])
        hint = ""
        if parent is not None:
            close = difflib.get_close_matches(str(error["loc"][-1]), _field_names(parent), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(_field_names(parent))}"
        return f"{key}: unknown key{hint}"
    if error["type"] == "missing":
        return f"{key}: required key is missing"
    msg = error["msg"].removeprefix("Value error, ")
    if not error["loc"]:  # a check across sections: its message names the keys
        return msg
    if isinstance(error.get("input"), dict):  # a check across a section's keys: the section is the key
        return f"{key}: {msg}"
    return f"{key}: {msg} (got {error.get('input')!r})"


def _field_names(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _lookup_model(loc: tuple) -> type[BaseModel] | None:
    """The schema class at a location such as ('models', 'cnn', 'augment')."""
    model: type[BaseModel] = Params
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        fields = {f.alias or n: f for n, f in model.model_fields.items()}
        if part not in fields:
            return None
        annotation = fields[part].annotation
        if getattr(annotation, "__origin__", None) is dict:  # dict[str, ModelParams]: skip the key
            annotation = annotation.__args__[1]
            if parts:
                parts.pop(0)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model
