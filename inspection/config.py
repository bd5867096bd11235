"""params.yaml schema: every knob, validated before a stage does any work.

Unknown keys and invalid values fail fast with the dotted key named, e.g.
``params.yaml: train.batch_size: Input should be greater than 0``.
"""
# long: one schema class per params.yaml section plus the loader; the one source of every key's type and range
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Optional, Union
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from inspection.errors import UserError


PARAMS_FILE = Path(os.environ.get("INSPECTION_PARAMS", "params.yaml"))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KaggleParams(_Strict):
    dataset: str
    version: int = Field(..., ge=1)


class LocalParams(_Strict):
    path: str
    sha256: Optional[str] = Field(..., pattern=r"^[0-9a-fA-F]{64}$")


class SyntheticParams(_Strict):
    per_class: int = Field(..., ge=4)
    size: int = Field(..., ge=32, le=2048)
    seed: int


def _folder_key(name: str) -> str:
    """A folder name as compared with data.classes: NFC-normalised, case-folded."""
    import unicodedata

    return unicodedata.normalize("NFC", name).casefold()


class DataParams(_Strict):
    source: Literal["auto", "kaggle", "local", "synthetic"]
    kaggle: KaggleParams
    local: LocalParams
    synthetic: SyntheticParams
    extra: list[str]  # further sources (folders or zips, one sub-folder per class) merged with ``source``
    classes: dict[str, list[str]]
    positive_class: str
    max_image_pixels: int = Field(..., ge=1024)  # larger images are quarantined from their header (no decode)

    @model_validator(mode="after")
    def _check_classes(self) -> "DataParams":
        if len(self.classes) != 2:
            raise ValueError("classes: exactly two classes are needed (a defect class and an ok class)")
        if self.positive_class not in self.classes:
            raise ValueError(f"positive_class: {self.positive_class!r} is not one of classes {sorted(self.classes)}")
        if "defect" not in self.classes or self.positive_class != "defect":
            # the model outputs a defect probability and every route word assumes it: anything else would silently
            # invert the labels (e.g. synthetic defects written into data/raw/ok/)
            raise ValueError(f"positive_class: must be 'defect' (the class the model's defect probability is "
                             f"about; got {self.positive_class!r} with classes {sorted(self.classes)}); put other "
                             "folder names for it under classes.defect")
        seen: dict[str, str] = {}
        for name, folders in self.classes.items():
            for folder in [name, *folders]:
                if seen.setdefault(_folder_key(folder), name) != name:
                    raise ValueError(f"classes: folder name {folder!r} maps to two classes")
        return self

    @property
    def negative_class(self) -> str:
        return next(c for c in self.classes if c != self.positive_class)

    def class_of(self, folder_name: str) -> str | None:
        """The class a folder name stands for (the class itself or one of its aliases, any case, Unicode-normalised:
        'défaut' typed on macOS (NFD) matches 'défaut' in params.yaml (NFC)), or None."""
        name = _folder_key(folder_name)
        return next((c for c, aliases in self.classes.items() if name in {_folder_key(a) for a in [c, *aliases]}),
                    None)


class NearDupParams(_Strict):
    method: Literal["thumb_d4", "none"]
    max_distance: float = Field(..., ge=0.0, le=2.0)


MAX_HELD_OUT = 0.5  # val + test may take at most half of the images: training keeps the rest


class SplitParams(_Strict):
    seed: int
    val_fraction: float = Field(..., gt=0.0, lt=0.5)
    test_fraction: float = Field(..., gt=0.0, lt=0.5)
    use_source_test: bool
    max_quarantined_fraction: float = Field(..., ge=0.0, le=1.0)
    near_duplicates: NearDupParams
    confound_warn_auc: float = Field(..., gt=0.5, le=1.0)
    min_images_per_class: int = Field(..., ge=1)  # each of train/val/test needs this many images of each class

    @model_validator(mode="after")
    def _enough_for_training(self) -> "SplitParams":
        held_out = self.val_fraction + (0.0 if self.use_source_test else self.test_fraction)
        if held_out > MAX_HELD_OUT:
            raise ValueError(
                f"val_fraction + test_fraction = {held_out:g} leaves only {1 - held_out:.0%} of the images for "
                f"training; keep the sum <= {MAX_HELD_OUT:g}")
        return self


class AugmentParams(_Strict):
    flip: bool
    rotate: bool
    gain: Optional[tuple[float, float]]  # exposure factor range
    gamma: Optional[tuple[float, float]]
    contrast: Optional[tuple[float, float]]
    blur_sigma: Optional[tuple[float, float]]  # pixels at the model's input size
    noise_sigma: Optional[tuple[float, float]]  # grey levels at the model's input size
    probability: float = Field(..., ge=0.0, le=1.0)         # share of images each photometric op touches
    shift: float = Field(..., ge=0.0, le=0.5)              # fraction of the side
    zoom: float = Field(..., ge=0.0, le=0.5)
    perspective: float = Field(..., ge=0.0, le=0.9)         # camera tilt: max foreshortening across the image

    @model_validator(mode="after")
    def _ranges(self) -> "AugmentParams":
        for name in ("gain", "gamma", "contrast", "blur_sigma", "noise_sigma"):
            r = getattr(self, name)
            if r is not None and not (0 <= r[0] <= r[1]):
                raise ValueError(f"{name}: expected [low, high] with 0 <= low <= high, got {list(r)}")
        return self


class TrainParams(_Strict):
    arch: Literal["compact", "seed"]
    pooling: Literal["avg", "avg+max"]                   # compact's global pooling (seed flattens)
    image_size: int = Field(..., ge=32, le=1024)
    batch_size: int = Field(..., ge=1)
    max_epochs: int = Field(..., ge=1)
    patience: int = Field(..., ge=0)
    learning_rate: float = Field(..., gt=0.0, lt=1.0)
    lr_schedule: Literal["cosine", "plateau"]
    normalize: Literal["per_image", "none"]
    seed: int
    class_weight: Literal["balanced", "none"]
    input: Literal["stream", "memory"]                   # stream = on-disk shards through tf.data
    shuffle_buffer: int = Field(..., ge=1)               # images in the streaming shuffle buffer
    shard_images: int = Field(..., ge=1)                 # images per shard file (stage shards)
    augment: AugmentParams
    bn_calibration_images: int = Field(..., ge=0)        # precise BatchNorm each epoch on this many train images; 0 = off
    stop_from_epoch: int = Field(..., ge=0)              # early stopping neither stops nor keeps an epoch before this
    settle_epochs: int = Field(..., ge=1)                # settled: none of the last N val losses exceeds
    settle_ratio: float = Field(..., ge=1.0)             # ... ratio x the lowest
    mlflow_experiment: str = Field(..., min_length=1)


PerturbationKind = Literal["gain", "gamma", "contrast", "blur", "noise", "jpeg", "rotate", "shift", "scale"]


class Perturbation(_Strict):
    kind: PerturbationKind
    value: Optional[float]  # None only for rotate (a random angle per image)
    gated: bool  # judged against report.targets (missed, false rejects, RETAKE) when report.targets.robustness

    @model_validator(mode="after")
    def _value(self) -> "Perturbation":
        if self.value is None and self.kind != "rotate":
            raise ValueError(f"value: {self.kind} needs a value")
        if self.kind == "jpeg" and self.value is not None and not 1 <= self.value <= 100:
            raise ValueError("value: jpeg quality must be within 1-100")
        if self.kind in ("gain", "gamma", "contrast", "scale") and self.value is not None and self.value <= 0:
            raise ValueError(f"value: {self.kind} must be > 0")
        return self


class RobustnessParams(_Strict):
    seed: int
    perturbations: dict[str, Perturbation]


class BootstrapParams(_Strict):
    resamples: int = Field(..., ge=100)
    confidence: float = Field(..., gt=0.5, lt=1.0)
    seed: int


class RetakeParams(_Strict):
    camera_check: bool                                   # camera check outside the range -> RETAKE
    camera_range: Literal["validated", "training"]       # RETAKE outside what the model was validated under | training
    ood_fit: Literal["clean", "rotated"]                 # OOD gate fitted on the training photos | + each rotated once
    ood_limit: Literal["tiered", "validated", "clean"]   # RETAKE above the validated limit (+ ood_margin), REVIEW
                                                         # instead of PASS above the clean one | validated | clean
    ood_margin: float = Field(..., ge=0.0, le=1.0)       # tiered: the RETAKE limit widened by this share
    max_share: float = Field(..., gt=0.0, lt=0.5)        # RETAKE budget on good photos; sets the OOD limit
    ood_battery_per_kind: int = Field(..., ge=1)         # test photos per kind in the OOD battery


class BandTargets(_Strict):
    """The error rates the review band is chosen to guarantee on validation (at most report.targets)."""
    max_missed_rate: float = Field(..., gt=0.0, lt=1.0)
    max_false_reject_rate: float = Field(..., gt=0.0, lt=1.0)


class EvaluateParams(_Strict):
    policy: Literal["min_recall", "max_f1", "fixed"]
    min_recall: float = Field(..., gt=0.0, le=1.0)
    robust_threshold: bool  # min_recall must also hold on validation under every gated perturbation
    fixed_threshold: float = Field(..., gt=0.0, lt=1.0)
    sweep_points: int = Field(..., ge=3, le=100001)
    review_band: Union[Literal["auto"], tuple[float, float], None]  # auto (chosen on validation, decision/band.py) |
    #                                     [low, high]: auto-pass < low <= review < high <= auto-reject | null: none
    tta: Literal["none", "d4"]             # test-time views averaged inside the deployed graph (model/tta.py)
    band_targets: BandTargets              # review_band auto: the rates the band guarantees on validation
    bootstrap: BootstrapParams
    robustness: RobustnessParams
    drift_margin: float = Field(..., ge=0.0)            # widen the training [p0.5, p99.5] ranges by this x width
    retake: RetakeParams

    @model_validator(mode="after")
    def _band(self) -> "EvaluateParams":
        b = self.review_band
        if b is not None and b != "auto" and not 0.0 < b[0] < b[1] < 1.0:
            raise ValueError(f"review_band: expected [low, high] with 0 < low < high < 1, got {list(b)}")
        return self


class ExportParams(_Strict):
    parity_images: int = Field(..., ge=1)
    parity_tolerance: float = Field(..., gt=0.0)
    quantize: Literal["none", "float16"]  # TF.js weight quantisation


class ReportTargets(_Strict):
    """The line's acceptance targets, each judged on the upper bound of its exact binomial interval."""
    max_missed_rate: float = Field(..., ge=0.0, le=1.0)        # defects routed PASS / defects (clean test)
    max_false_reject_rate: float = Field(..., ge=0.0, le=1.0)  # good parts routed REJECT / good parts (clean test)
    max_review_share: float = Field(..., ge=0.0, le=1.0)       # REVIEW share of all parts at the line's defect rate
    max_retake_share: float = Field(..., ge=0.0, le=1.0)       # RETAKE share of the clean test split
    robustness: bool                                            # missed / false-reject targets under each gated perturbation


class ReportParams(_Strict):
    max_misclassified: int = Field(..., ge=0)   # misclassified test images shown (worst first)
    uncertain_cases: int = Field(..., ge=0)      # correct but closest to the threshold
    reference_defects: int = Field(..., ge=0)    # confidently found defects, for comparison
    thumbnail: int = Field(..., ge=32, le=600) # pixels per shown image
    cases_open: int = Field(..., ge=0)           # bad-case cards shown open, the rest collapsed
    line_defect_rate: float = Field(..., gt=0.0, lt=1.0)  # share of defective parts on the line
    parts_per_shift: int = Field(..., ge=1)      # parts per shift, for the per-shift costs
    trend_runs: int = Field(..., ge=1)           # last runs of the MLflow experiment in the trend
    targets: ReportTargets


class WebParams(_Strict):
    parity_images: int = Field(..., ge=2)          # test images run through TF.js in Node and Chromium
    parity_tolerance: float = Field(..., gt=0.0) # max |TF.js - SavedModel| defect probability
    ood_parity_tolerance: float = Field(..., gt=0.0)  # max relative |TF.js - SavedModel| OOD score
    chromium: str  # browser for the parity check, the benchmark, the screenshots and the report's PDF
    require_browser: bool  # false: without Chromium those steps are skipped with a warning (Node parity still gates)
    benchmark_backends: list[Literal["wasm", "webgl", "cpu"]]
    benchmark_repeats: int = Field(..., ge=5)      # timed single-image predictions per backend


class RegistryParams(_Strict):
    model_name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")  # MLflow registered model


class PromoteParams(_Strict):
    max_extra_missed: int = Field(..., ge=0)                # challenger may miss this many more defects (PASS)
    false_reject_margin: float = Field(..., ge=0.0, le=1.0)  # challenger false-reject rate <= champion's + this
    max_retake_share: float = Field(..., ge=0.0, le=1.0)     # challenger RETAKE share of the compared images
    min_images: int = Field(..., ge=1)                       # fewer held-out images: no promotion
    golden: Optional[str]                                    # folder of fixed images, one sub-folder per class
    allow_not_ready: bool                                    # may a model its decision calls not ready be champion


class Params(_Strict):
    data: DataParams
    split: SplitParams
    train: TrainParams
    evaluate: EvaluateParams
    export: ExportParams
    report: ReportParams
    web: WebParams
    registry: RegistryParams
    promote: PromoteParams

    @model_validator(mode="after")
    def _band_within_targets(self) -> "Params":
        b, t = self.evaluate.band_targets, self.report.targets
        for key in ("max_missed_rate", "max_false_reject_rate"):
            if getattr(b, key) > getattr(t, key):
                raise ValueError(f"evaluate.band_targets.{key}: {getattr(b, key):g} is looser than "
                                 f"report.targets.{key} {getattr(t, key):g}; the band must guarantee at least the "
                                 "line's target")
        return self


def _format(err: ValidationError, source: Path) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")  # a validator's own sentence, without pydantic's prefix
    if first["type"] == "extra_forbidden":
        msg = "unknown key; check its spelling against params.yaml's documented keys"
    elif first["type"] in ("int_parsing", "int_from_float", "int_type"):
        got = first.get("input")
        hint = ""
        try:
            value = float(got)
            if value.is_integer():
                hint = f"; write {int(value)}"
        except (TypeError, ValueError):
            pass
        msg = f"must be a whole number, got {got!r}{hint}"   # YAML reads 2e1 as the string '2e1'
    elif first["type"] in ("float_parsing", "float_type") and isinstance(first.get("input"), str):
        msg = (f"must be a number, got the string {first['input']!r} (YAML reads 1e-3 as a string: write "
               "1.0e-3 or 0.001)")
    more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{source}: {key}: {msg}{more}"


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's last-key-wins would hide a second `train:` block (or a key given twice): refuse duplicates."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (lines {seen[key] + 1} and {key_node.start_mark.line + 1}); "
                                "keep one", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_yaml(source: Path) -> dict:
    """A YAML file as a dict, refusing duplicate keys; a syntax error keeps its line and column."""
    try:
        return yaml.load(source.read_text(), Loader=_UniqueKeyLoader) or {}
    except yaml.constructor.ConstructorError as exc:
        raise UserError(f"{source}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UserError(f"{source} is not valid YAML{where} ({getattr(exc, 'problem', None) or str(exc).splitlines()[0]}); "
                        "fix the syntax") from None


def load_params(path: Path | str | None = None) -> Params:
    """Read and validate the whole params file (all sections, so a typo anywhere fails fast)."""
    source = Path(path) if path is not None else PARAMS_FILE
    if not source.exists():
        raise UserError(f"{source} not found: run the stage from the repository root (where dvc.yaml is)")
    raw = read_yaml(source)
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise UserError(_format(exc, source)) from None


def baseline_rev() -> str:
    """The commit a run's params are compared with: the experiment's baseline under `dvc exp run` (DVC sets
    DVC_EXP_BASELINE_REV), else HEAD. The report names it, so the comparison is a recorded fact of the run."""
    return os.environ.get("DVC_EXP_BASELINE_REV") or "HEAD"


def committed_params(path: Path | str | None = None, rev: str | None = None) -> dict:
    """params.yaml as committed at ``rev`` (default: baseline_rev()); {} outside git or when not committed."""
    import subprocess

    source = Path(path) if path is not None else PARAMS_FILE
    try:
        text = subprocess.run(["git", "show", f"{rev or baseline_rev()}:./{source.as_posix()}"], capture_output=True,
                              text=True, check=True).stdout
        return yaml.safe_load(text) or {}
    except (OSError, subprocess.CalledProcessError, yaml.YAMLError):
        return {}


def committed_flat_params(rev: str | None = None) -> dict[str, object]:
    """``flat_params`` of params.yaml as committed at ``rev`` (default: baseline_rev()), validated like the run's own
    (so 40 and 40.0 are one value); {} outside git, when not committed, or when that commit's schema was older."""
    ref = committed_params(rev=rev)
    try:
        return flat_params(Params.model_validate(ref)) if ref else {}
    except ValidationError:
        return {}


def changed_params(params: Params, reference: dict | None = None) -> dict[str, object]:
    """Dotted keys whose value differs from params.yaml at the baseline commit (the project's defaults), e.g.
    the overrides of a `dvc exp run -S`; for the report and run names. ``reference``: a params tree instead."""
    if reference is None:
        base = committed_flat_params()
    else:
        try:
            base = flat_params(Params.model_validate(reference))
        except ValidationError:
            base = {}
    if not base:
        return {}
    return {k: v for k, v in flat_params(params).items() if base.get(k, object()) != v}


def set_dotted(tree: dict, changes: dict[str, object], sep: str = ".") -> dict:
    """Set nested keys of a params tree in place, e.g. {"train.max_epochs": 1} (for scratch copies in tests and
    tools; nothing writes the repository's params.yaml)."""
    for dotted, value in changes.items():
        node = tree
        *parents, last = dotted.split(sep)
        for k in parents:
            node = node[k]
        node[last] = value
    return tree


def flatten(tree: dict) -> dict[str, object]:
    """A params tree (validated or as read from a params.yaml) as a flat dotted-key dict; data.classes stays one
    value."""
    out: dict[str, object] = {}

    def walk(d: dict, prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict) and k != "classes":
                walk(v, f"{prefix}{k}.")
            else:
                out[f"{prefix}{k}"] = v
    walk(tree, "")
    return out


def flat_params(params: Params) -> dict[str, object]:
    """All params as a flat dotted-key dict (for MLflow)."""
    return flatten(params.model_dump())
