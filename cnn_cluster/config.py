"""YAML -> validated, frozen config objects. The only place YAML is parsed.

A sweep file has the sections ``name``, ``data``, ``train``, ``experiments``,
``grid``, ``search``, ``resources``, ``output`` and ``occlusion``. Each experiment entry
sets the model fields and may override any ``train`` field. Every error names
the dotted path of the offending field.
"""

from __future__ import annotations

import difflib
import itertools
import re
from pathlib import Path
from urllib.parse import urlsplit
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from .errors import ConfigError

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticConfig(_Strict):
    classes: int = Field(10, ge=2, le=100)  # mini-ImageNet has 100; 10 trains in minutes
    images_per_class: int = Field(300, ge=4)  # with the 10 classes, 3,000 images: epochs take seconds
    # A class-specific patch at a fixed place in the background: a planted
    # context cue, used to check that occlusion catches a model relying on it.
    context_cue: bool = False


class DataConfig(_Strict):
    source: Literal["synthetic", "miniimagenet", "packed"] = "synthetic"  # synthetic: the built-in set
    root: Optional[Path] = None  # raw or packed dataset folder; synthetic: cache folder (default ~/.cache/cnnc)
    format: Literal["auto", "csv", "folders", "pickle", "parquet"] = "auto"  # mini-ImageNet layout
    image_size: int = Field(84, ge=8, le=512)  # mini-ImageNet's 84x84
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train/val/test fractions per class
    seed: int = 0  # split and synthetic generation
    synthetic: SyntheticConfig = SyntheticConfig()
    # Object boxes for real images (filename,x0,y0,x1,y1 or ImageNet's LOC_*_solution.csv): Part B's
    # object-or-context verdict needs them; the built-in set records its own.
    boxes: Optional[Path] = None

    @field_validator("split")
    @classmethod
    def _fractions(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(f <= 0 for f in v) or abs(sum(v) - 1.0) > 1e-6:
            raise ValueError("split fractions must be positive and sum to 1 (e.g. [0.8, 0.1, 0.1])")
        return v


class TrainConfig(_Strict):
    epochs: int = Field(10, ge=1)  # the study's experiment 1
    batch_size: int = Field(128, ge=1)  # per trial, split across its workers
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)  # Adam's default
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd only
    scheduler: Literal["none", "cosine"] = "none"
    warmup_epochs: int = Field(0, ge=0)  # linear warm-up; keeps batch-norm configs from collapsing
    # flip: mirror only; flip_crop: + pad-4 crop; resized_crop: mirror + random-resized crop (crop_scale)
    augmentation: Literal["none", "flip", "flip_crop", "resized_crop"] = "none"
    crop_scale: tuple[float, float] = (0.35, 1.0)  # resized_crop: area share kept; 84 px images lose detail below ~1/3
    color_jitter: float = Field(0.0, ge=0, lt=1)  # brightness, contrast, saturation factors in [1 - s, 1 + s]
    mixup: float = Field(0.0, ge=0)  # Beta(a, a) of mixup; 0: off
    cutmix: float = Field(0.0, ge=0)  # Beta(a, a) of CutMix; 0: off (both on: one of the two per batch)
    ema: float = Field(0.0, ge=0, lt=1)  # decay per step of a weight average that validation and test use; 0: off
    test_time_flip: bool = False  # validation and test average the image's and its mirror's probabilities
    batch_norm: bool = False
    dropout: float = Field(0.0, ge=0, lt=1)  # before each hidden FC layer
    label_smoothing: float = Field(0.0, ge=0, lt=1)  # of the training loss; validation and test stay plain
    # auto: bf16 autocast where the hardware computes it natively (CPUs with avx512_bf16 or AMX,
    # GPUs with bf16), fp32 elsewhere; weights, optimizer state and the loss stay fp32 either way.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    seed: int = 0

    @field_validator("crop_scale")
    @classmethod
    def _scale(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1] <= 1:
            raise ValueError("crop_scale must be [low, high] with 0 < low <= high <= 1 (e.g. [0.35, 1.0])")
        return v


class ModelConfig(_Strict):
    conv_filters: tuple[int, ...] = Field(min_length=1)
    fc_layers: tuple[int, ...] = ()
    max_pool: bool = True
    stride: int = Field(1, ge=1)
    kernel_size: int = Field(3, ge=1)

    @field_validator("conv_filters", "fc_layers")
    @classmethod
    def _positive(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(n < 1 for n in v):
            raise ValueError("every layer width must be >= 1")
        return v

    @property
    def conv_layers(self) -> int:
        return len(self.conv_filters)


# One experiment entry: the model fields plus an optional override of every
# train field. Generated so that a new train field is overridable for free.
ExperimentSpec = create_model(  # type: ignore[call-overload]
    "ExperimentSpec",
    __base__=_Strict,
    name=(Optional[str], None),
    **{k: (f.annotation, f) for k, f in ModelConfig.model_fields.items()},
    **{k: (Optional[f.annotation], None) for k, f in TrainConfig.model_fields.items()},
)
_MODEL_KEYS = tuple(ModelConfig.model_fields)
_TRAIN_KEYS = tuple(TrainConfig.model_fields)


class ResourcesConfig(_Strict):
    workers_per_trial: int = Field(1, ge=1)  # data-parallel ranks of one trial
    cpus_per_worker: float = Field(1, gt=0)  # also its torch thread count
    gpus_per_worker: float = Field(0, ge=0)
    max_concurrent_trials: Optional[int] = Field(None, ge=1)  # default: as many as the cluster fits
    max_failures: int = Field(2, ge=0)  # worker restarts per trial, from the last checkpoint


class OutputConfig(_Strict):
    root: Path = Path("runs")  # run folders are <root>/<name>-<timestamp>
    # false: each trial's weights are removed once the run (occlusion stage included) is done;
    # the tables, predictions and maps stay, but `cnnc occlude` needs weights later.
    keep_checkpoints: bool = True

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, v: Any) -> Any:
        return {"root": v} if isinstance(v, (str, Path)) else v


class OcclusionConfig(_Strict):
    count: int = Field(10, ge=1)  # the study analysed ~10 images
    select: Literal["random", "confident", "per_class"] = "random"
    misclassified: int = Field(0, ge=0)  # also map these many errors (true and predicted class)
    window: int = Field(8, ge=1)  # the study's N
    stride: int = Field(2, ge=1)  # the study's S
    fill: Literal["mean", "gray", "zero", "blur"] = "mean"  # mean = 0 after normalisation, the study's gray
    method: Literal["auto", "fast", "dense"] = "auto"  # auto: fast where the model allows it
    precision: Literal["fp32", "bf16"] = "fp32"  # fp32: maps exact against Captum; bf16 measured in docs
    workers: Optional[int] = Field(None, ge=1)  # default: one per CPU the cluster has, at most 8
    seed: int = 0
    # Methods beside the study's occlusion (Captum's); occlusion alone keeps Part B as the study ran it.
    methods: list[Literal["occlusion", "saliency", "integrated_gradients", "grad_cam"]] = ["occlusion"]
    grad_cam_layer: Optional[str] = None  # a conv layer's name, e.g. features.3; None: the last conv
    ig_steps: int = Field(16, ge=2)  # IG's path steps (Captum's default 50): 16 keeps Part B's extras within the
    # occlusion maps' own time on 2 CPUs (bench/attribution.py); more is closer to the integral, linearly slower
    faithfulness_steps: int = Field(16, ge=0)  # deletion/insertion curve steps (1/16 of the pixels each); 0: none
    sanity_images: int = Field(0, ge=0)  # images given the cascading randomisation check (~1 occlusion map each)

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("name at least one method")
        if len(set(v)) != len(v):
            raise ValueError(f"a method is named twice ({', '.join(v)})")
        return v


class MlflowConfig(_Strict):
    """An MLflow tracking server or store; credentials come from MLflow's own environment variables
    (MLFLOW_TRACKING_TOKEN, MLFLOW_TRACKING_USERNAME/PASSWORD) or ``token_file``, never from here."""

    tracking_uri: Optional[str] = None  # http(s)://host:port, file:/path or sqlite:///path; None: $MLFLOW_TRACKING_URI
    experiment: str = "cnnc"  # the MLflow experiment the sweep's runs go to
    token_file: Optional[Path] = None  # a file holding the server's bearer token (kept out of the run folder)

    @field_validator("tracking_uri")
    @classmethod
    def _uri(cls, v: Optional[str]) -> Optional[str]:
        if v is None:
            return v
        parsed = urlsplit(v)
        if parsed.scheme in ("http", "https"):
            if not parsed.hostname:
                raise ValueError(f"{v!r}: no host (e.g. http://127.0.0.1:5000)")
            if parsed.username or parsed.password:
                raise ValueError("credentials do not belong in the URI (they would be saved with the run): "
                                 "use MLFLOW_TRACKING_USERNAME/PASSWORD or token_file")
            try:
                parsed.port
            except ValueError:
                raise ValueError(f"{v!r}: the port is not a number") from None
        elif parsed.scheme not in ("file", "sqlite", "postgresql", "mysql"):
            raise ValueError(f"{v!r}: expected http(s)://host:port, file:/path or sqlite:///path")
        return v


class WandbConfig(_Strict):
    project: str = "cnnc"
    mode: Literal["offline", "online"] = "offline"  # offline: files under RUN/wandb, `wandb sync` later
    entity: Optional[str] = None  # a W&B team; the key comes from WANDB_API_KEY or `wandb login`


class TrackingConfig(_Strict):
    """Where a sweep's trials are tracked besides the run folder (docs/tracking.md)."""

    # on by default: tensorboardX comes with Ray Tune, and event files cost ~1 KB per epoch
    tensorboard: bool = True  # event files under RUN/tensorboard/<trial>
    mlflow: Optional[MlflowConfig] = None  # pip install 'cnn-cluster[mlflow]'
    wandb: Optional[WandbConfig] = None  # pip install 'cnn-cluster[wandb]'


DISTRIBUTIONS = ("choice", "uniform", "loguniform", "randint", "quniform")


class SearchConfig(_Strict):
    """A recipe search per experiment: ``num_samples`` recipes drawn from ``space`` for each."""

    num_samples: int = Field(8, ge=1)  # recipes tried per experiment
    metric: Literal["val_acc"] = "val_acc"  # maximised; the test split stays out of the search
    algorithm: Literal["random", "optuna"] = "random"  # optuna: pip install 'cnn-cluster[search]'
    scheduler: Literal["none", "asha"] = "asha"
    grace_period: int = Field(2, ge=1)  # epochs before ASHA may stop a trial
    reduction_factor: int = Field(3, ge=2)  # ASHA keeps the best 1/reduction_factor at each rung
    seed: int = 0  # the draws: the same seed draws the same recipes
    space: dict[str, dict[str, list[Any]]] = Field(min_length=1)  # field -> {distribution: arguments}


class SweepConfig(_Strict):
    name: str = "sweep"
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    experiments: tuple[ExperimentSpec, ...] = ()  # type: ignore[valid-type]
    grid: dict[str, list[Any]] = {}
    search: Optional[SearchConfig] = None
    resources: ResourcesConfig = ResourcesConfig()
    output: OutputConfig = OutputConfig()
    occlusion: Optional[OcclusionConfig] = None
    tracking: TrackingConfig = TrackingConfig()

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError("use letters, digits, '.', '_' and '-' only (it names the run folder)")
        return v

    def resolved_experiments(self) -> list["Experiment"]:
        return _expand(self)


class Experiment(_Strict):
    """One trial's full recipe: a name, a model and its training settings."""

    name: str
    model: ModelConfig
    train: TrainConfig


# --------------------------------------------------------------------------- loading


def load_config(path: Path | str | None, overrides: list[str] = ()) -> SweepConfig:
    """Read, override and validate a sweep file. Raises ConfigError with the field's path."""
    raw = _read_yaml(Path(path)) if path is not None else {}
    where = str(path) if path is not None else "config"
    for item in overrides:
        _apply_override(raw, item)
    return validate(raw, where)


def validate(raw: dict, where: str = "config") -> SweepConfig:
    """Turn a plain dict into a SweepConfig, or raise ConfigError naming the field."""
    try:
        _check_keys(raw, SweepConfig, "")
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    try:
        cfg = SweepConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {_describe(exc)}") from None
    try:
        exps = cfg.resolved_experiments()
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if not exps:
        raise ConfigError(f"{where}: experiments: the list is empty; add at least one experiment (or a grid)")
    if cfg.search is not None:
        try:
            _check_search(cfg.search, exps)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return cfg


def dump_config(cfg: SweepConfig) -> str:
    """The resolved config as YAML, loadable again by load_config."""
    return yaml.safe_dump(cfg.model_dump(mode="json", exclude_defaults=False), sort_keys=False)


def best_recipes_yaml(cfg: SweepConfig, recipes: list[Experiment], header: str = "") -> str:
    """A sweep file that trains ``recipes`` as they are: the search and the grid are spent."""
    raw = cfg.model_dump(mode="json", exclude={"search", "grid"})
    raw["experiments"] = [{"name": e.name, **e.model.model_dump(mode="json"), **e.train.model_dump(mode="json")}
                          for e in recipes]
    validate(raw, "best recipes")  # what is written loads again
    return header + yaml.safe_dump(raw, sort_keys=False, default_flow_style=None, width=120)


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.__class__.__name__})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.constructor.ConstructorError as exc:  # a tag safe_load refuses: !!python/object and kin
        mark = exc.problem_mark
        found = re.search(r"tag '([^']+)'", exc.problem or "")
        tag = found[1].replace("tag:yaml.org,2002:", "!!") if found else "?"
        raise ConfigError(f"{path}: YAML tag {tag} at line {mark.line + 1}, column {mark.column + 1} is refused "
                          "(only plain YAML is read)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        pos = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: YAML syntax error{pos}: {problem}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (name, data, train, ...)")
    return raw


def _apply_override(raw: dict, item: str) -> None:
    """Apply ``a.b.0.c=value`` (value parsed as YAML) to the raw dict."""
    if "=" not in item:
        raise ConfigError(f"--set {item}: expected FIELD=VALUE, e.g. train.lr=0.01")
    dotted, _, text = item.partition("=")
    try:
        value = yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        value = text
    keys = dotted.strip().split(".")
    node: Any = raw
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise ConfigError(f"--set {dotted}: {'.'.join(keys[:i + 1])}: no such list item (has {len(node)})")
            key = int(key)
        elif not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {'.'.join(keys[:i])} is not a section")
        if last:
            node[key] = value
        else:
            if isinstance(node, dict) and not isinstance(node.get(key), (dict, list)):
                node[key] = {}
            node = node[key]


def _check_keys(raw: Any, model: type[BaseModel], path: str) -> None:
    """Reject unknown keys, suggesting the closest valid one (pydantic does not)."""
    if not isinstance(raw, dict):
        return
    fields = model.model_fields
    for key, value in raw.items():
        here = f"{path}{key}"
        if key not in fields:
            valid = sorted(fields)
            hint = _hint(str(key), valid)
            raise ConfigError(f"{here}: unknown key; {hint}valid keys: {', '.join(valid)}")
        sub = _submodel(fields[key].annotation)
        if sub is not None:
            items = value if isinstance(value, list) else [value]
            for j, item in enumerate(items):
                _check_keys(item, sub, f"{here}.{j}." if isinstance(value, list) else f"{here}.")


def _hint(key: str, valid: list[str]) -> str:
    """'did you mean ...? ' for a typo or a longer/shorter spelling of a valid key."""
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    close = close or [v for v in valid if key.startswith(v) or v.startswith(key)][:1]
    return f"did you mean '{close[0]}'? " if close else ""


def _submodel(annotation: Any) -> Optional[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _submodel(arg)
        if found is not None:
            return found
    return None


def _masked(value: object) -> object:
    """A refused value as the error line shows it: a URL's user and password hidden (terminals and
    job logs are read by others)."""
    return re.sub(r"(\w+://)[^/@\s]+@", r"\1***@", value) if isinstance(value, str) else value


def _describe(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "literal_error":
        msg = "must be one of " + err["ctx"]["expected"].replace("'", "")
    got = err.get("input")
    shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {_masked(got)!r})"
    if err["type"] == "missing":
        return f"{loc}: required field is missing"
    return f"{loc}: {msg}{shown}"


# --------------------------------------------------------------------------- experiments


def _expand(cfg: SweepConfig) -> list[Experiment]:
    """Explicit experiments, times the grid's cartesian product when one is given."""
    bases = [(spec.name or f"exp{i + 1}", spec.model_dump(exclude_none=True)) for i, spec in enumerate(cfg.experiments)]
    if cfg.grid:
        bases = _grid(cfg.grid, bases or [("grid", {})])
    out, seen = [], set()
    for i, (name, fields) in enumerate(bases):
        fields.pop("name", None)
        if name in seen or not _NAME_RE.match(name):
            raise ConfigError(f"experiments.{i}.name: '{name}' is duplicated or has characters other than "
                              "letters, digits, '.', '_', '-'")
        seen.add(name)
        out.append(_experiment(cfg.train, name, fields, f"experiments.{i}"))
    return out


def _grid(grid: dict[str, list[Any]], bases: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    valid = set(_MODEL_KEYS) | set(_TRAIN_KEYS)
    for key, values in grid.items():
        if key not in valid:
            hint = _hint(key, sorted(valid))
            raise ConfigError(f"grid.{key}: unknown field; {hint}valid: {', '.join(sorted(valid))}")
        if not values:
            raise ConfigError(f"grid.{key}: empty list of values")
    out = []
    for name, fields in bases:
        for combo in itertools.product(*grid.values()):
            tag = "-".join(f"{k}{_tag(v)}" for k, v in zip(grid, combo))
            out.append((f"{name}-{tag}" if name != "grid" else tag, {**fields, **dict(zip(grid, combo))}))
    return out


def _tag(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "x".join(str(v) for v in value)
    return str(value)


def _experiment(defaults: TrainConfig, name: str, fields: dict, where: str) -> Experiment:
    model = {k: fields[k] for k in _MODEL_KEYS if k in fields}
    train = {**defaults.model_dump(), **{k: fields[k] for k in _TRAIN_KEYS if k in fields}}
    try:
        return Experiment(name=name, model=ModelConfig.model_validate(model), train=TrainConfig.model_validate(train))
    except ValidationError as exc:
        raise ConfigError(f"{where}.{_describe(exc)}") from None


# --------------------------------------------------------------------------- search


def search_field(key: str) -> tuple[str, str]:
    """``train.lr`` -> ("train", "lr"); ``conv_filters`` or ``model.conv_filters`` -> ("model", ...)."""
    section, _, field = key.rpartition(".")
    if section in ("", "model") and field in _MODEL_KEYS:
        return "model", field
    if section == "train" and field in _TRAIN_KEYS:
        return "train", field
    valid = [f"train.{k}" for k in _TRAIN_KEYS] + list(_MODEL_KEYS)
    raise ConfigError(f"search.space.{key}: unknown field; {_hint(key, valid)}valid: {', '.join(valid)}")


def with_values(exp: Experiment, values: dict[str, Any], name: Optional[str] = None) -> Experiment:
    """The experiment with searched fields set (``values`` keyed like ``search.space``), validated."""
    parts: dict[str, dict] = {"model": exp.model.model_dump(), "train": exp.train.model_dump()}
    for key, value in values.items():
        section, field = search_field(key)
        parts[section][field] = value
    try:
        return Experiment(name=name or exp.name, model=ModelConfig.model_validate(parts["model"]),
                          train=TrainConfig.model_validate(parts["train"]))
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _check_search(search: SearchConfig, exps: list[Experiment]) -> None:
    if search.algorithm == "optuna":
        try:
            import optuna  # noqa: F401  (only whether it is there)
        except ImportError:
            raise ConfigError("search.algorithm: optuna is not installed; pip install 'cnn-cluster[search]' "
                              "or use algorithm: random") from None
    for key, dist in search.space.items():
        where = f"search.space.{key}"
        section, field = search_field(key)
        if len(dist) != 1 or next(iter(dist)) not in DISTRIBUTIONS:
            raise ConfigError(f"{where}: give exactly one distribution, one of {', '.join(DISTRIBUTIONS)} "
                              f"(e.g. {{loguniform: [1.0e-4, 1.0e-2]}})")
        kind, args = next(iter(dist.items()))
        _check_distribution(f"{where}.{kind}", kind, args, _field_kind(section, field))
        for value in (args if kind == "choice" else args[:2]):  # every choice, both ends of a range
            for exp in exps:
                try:
                    with_values(exp, {key: value})
                except ConfigError as exc:
                    raise ConfigError(f"{where}.{kind}: {value!r} is not a valid {key} for {exp.name} "
                                      f"({exc})") from None


def _field_kind(section: str, field: str) -> str:
    """What a field's type can take: "int", "float" or "choice" (booleans, names, layer lists)."""
    model = ModelConfig if section == "model" else TrainConfig
    annotation = model.model_fields[field].annotation
    return {int: "int", float: "float"}.get(annotation, "choice")


def _check_distribution(where: str, kind: str, args: list[Any], field_kind: str) -> None:
    if kind == "choice":
        if not args:
            raise ConfigError(f"{where}: empty list of choices")
        return
    if field_kind == "choice":
        raise ConfigError(f"{where}: this field takes listed values only; use {{choice: [...]}}")
    want = 3 if kind == "quniform" else 2
    if len(args) != want or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        shape = "[low, high, step]" if kind == "quniform" else "[low, high]"
        raise ConfigError(f"{where}: expected {shape} numbers (got {args!r})")
    low, high = args[0], args[1]
    if not low < high:
        raise ConfigError(f"{where}: empty range: low {low!r} must be below high {high!r}")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{where}: low must be > 0 for a log scale (got {low!r})")
    if kind == "quniform" and args[2] <= 0:
        raise ConfigError(f"{where}: step must be > 0 (got {args[2]!r})")
    integral = kind == "randint" or (kind == "quniform" and all(float(a).is_integer() for a in args))
    if field_kind == "int" and not integral:
        raise ConfigError(f"{where}: this field takes integers; use randint, or quniform with whole numbers")
    if kind == "randint" and not all(float(a).is_integer() for a in args):
        raise ConfigError(f"{where}: randint takes whole numbers (got {args!r})")
