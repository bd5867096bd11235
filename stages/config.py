"""params.yaml schema: every knob, validated before a stage does any work.

Unknown keys and invalid values fail fast with the dotted key named, e.g.
``params.yaml: train.batch_size: Input should be greater than 0``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from stages.errors import UserError

PARAMS_FILE = Path(os.environ.get("INSPECTION_PARAMS", "params.yaml"))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KaggleParams(_Strict):
    dataset: str = "ravirajsinh45/real-life-industrial-dataset-of-casting-product"
    version: int = Field(2, ge=1)


class LocalParams(_Strict):
    path: str = "data/source"
    sha256: Optional[str] = Field(None, pattern=r"^[0-9a-fA-F]{64}$")


class SyntheticParams(_Strict):
    per_class: int = Field(400, ge=4)
    size: int = Field(300, ge=32, le=2048)
    seed: int = 7


class DataParams(_Strict):
    source: Literal["kaggle", "local", "synthetic"] = "kaggle"
    kaggle: KaggleParams = KaggleParams()
    local: LocalParams = LocalParams()
    synthetic: SyntheticParams = SyntheticParams()
    classes: dict[str, list[str]] = {"defect": ["def_front"], "ok": ["ok_front"]}
    positive_class: str = "defect"

    @model_validator(mode="after")
    def _check_classes(self) -> "DataParams":
        if len(self.classes) != 2:
            raise ValueError("classes: exactly two classes are needed (a defect class and an ok class)")
        if self.positive_class not in self.classes:
            raise ValueError(f"positive_class: {self.positive_class!r} is not one of classes {sorted(self.classes)}")
        seen: dict[str, str] = {}
        for name, folders in self.classes.items():
            for folder in [name, *folders]:
                if seen.setdefault(folder.lower(), name) != name:
                    raise ValueError(f"classes: folder name {folder!r} maps to two classes")
        return self

    @property
    def negative_class(self) -> str:
        return next(c for c in self.classes if c != self.positive_class)


class NearDupParams(_Strict):
    method: Literal["thumb_d4", "none"] = "thumb_d4"
    max_distance: float = Field(0.06, ge=0.0, le=2.0)


class SplitParams(_Strict):
    seed: int = 42
    val_fraction: float = Field(0.15, gt=0.0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0.0, lt=0.5)
    use_source_test: bool = False
    max_quarantined_fraction: float = Field(0.01, ge=0.0, le=1.0)
    near_duplicates: NearDupParams = NearDupParams()
    confound_warn_auc: float = Field(0.75, gt=0.5, le=1.0)


class AugmentParams(_Strict):
    flip: bool = True
    rotate: bool = True
    gain: Optional[tuple[float, float]] = (0.6, 1.5)         # exposure factor range
    gamma: Optional[tuple[float, float]] = (0.7, 1.4)
    contrast: Optional[tuple[float, float]] = (0.7, 1.3)
    blur_sigma: Optional[tuple[float, float]] = (0.3, 1.5)   # pixels at the model's input size
    noise_sigma: Optional[tuple[float, float]] = (0.0, 8.0)  # grey levels at the model's input size
    probability: float = Field(0.5, ge=0.0, le=1.0)         # share of images each photometric op touches
    shift: float = Field(0.04, ge=0.0, le=0.5)              # fraction of the side
    zoom: float = Field(0.05, ge=0.0, le=0.5)
    perspective: float = Field(0.0, ge=0.0, le=0.9)         # camera tilt: max foreshortening across the image

    @model_validator(mode="after")
    def _ranges(self) -> "AugmentParams":
        for name in ("gain", "gamma", "contrast", "blur_sigma", "noise_sigma"):
            r = getattr(self, name)
            if r is not None and not (0 <= r[0] <= r[1]):
                raise ValueError(f"{name}: expected [low, high] with 0 <= low <= high, got {list(r)}")
        return self


class TrainParams(_Strict):
    arch: Literal["compact", "seed"] = "compact"
    image_size: int = Field(150, ge=32, le=1024)
    batch_size: int = Field(32, ge=1)
    max_epochs: int = Field(30, ge=1)
    patience: int = Field(4, ge=0)
    learning_rate: float = Field(0.002, gt=0.0, lt=1.0)
    lr_schedule: Literal["cosine", "plateau"] = "cosine"
    normalize: Literal["per_image", "none"] = "per_image"
    seed: int = 0
    class_weight: Literal["balanced", "none"] = "balanced"
    augment: AugmentParams = AugmentParams()
    mlflow_experiment: str = Field("casting-inspection", min_length=1)


PerturbationKind = Literal["gain", "gamma", "contrast", "blur", "noise", "jpeg", "rotate", "shift", "scale"]


class Perturbation(_Strict):
    kind: PerturbationKind
    value: Optional[float] = None   # None only for rotate (a random angle per image)
    gated: bool = True              # counts towards robustness.targets

    @model_validator(mode="after")
    def _value(self) -> "Perturbation":
        if self.value is None and self.kind != "rotate":
            raise ValueError(f"value: {self.kind} needs a value")
        if self.kind == "jpeg" and self.value is not None and not 1 <= self.value <= 100:
            raise ValueError("value: jpeg quality must be within 1-100")
        if self.kind in ("gain", "gamma", "contrast", "scale") and self.value is not None and self.value <= 0:
            raise ValueError(f"value: {self.kind} must be > 0")
        return self


class RobustnessTargets(_Strict):
    min_recall: float = Field(0.99, ge=0.0, le=1.0)
    max_false_reject_rate: float = Field(0.02, ge=0.0, le=1.0)


class RobustnessParams(_Strict):
    seed: int = 0
    perturbations: dict[str, Perturbation] = {
        "exposure x0.75": Perturbation(kind="gain", value=0.75),
        "exposure x1.25": Perturbation(kind="gain", value=1.25),
        "blur 1.5px": Perturbation(kind="blur", value=1.5),
        "noise 8": Perturbation(kind="noise", value=8),
        "jpeg q40": Perturbation(kind="jpeg", value=40),
        "rotate any": Perturbation(kind="rotate"),
    }
    targets: RobustnessTargets = RobustnessTargets()


class BootstrapParams(_Strict):
    resamples: int = Field(2000, ge=100)
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    seed: int = 0


class EvaluateParams(_Strict):
    policy: Literal["min_recall", "max_f1", "fixed"] = "min_recall"
    min_recall: float = Field(0.995, gt=0.0, le=1.0)
    robust_threshold: bool = False   # min_recall must also hold on validation under every gated perturbation
    fixed_threshold: float = Field(0.5, gt=0.0, lt=1.0)
    sweep_points: int = Field(201, ge=3, le=100001)
    review_band: Optional[tuple[float, float]] = None   # [low, high]: auto-pass < low <= review < high <= auto-reject
    bootstrap: BootstrapParams = BootstrapParams()
    robustness: RobustnessParams = RobustnessParams()
    drift_margin: float = Field(0.1, ge=0.0)            # widen the training [p0.5, p99.5] ranges by this x width

    @model_validator(mode="after")
    def _band(self) -> "EvaluateParams":
        b = self.review_band
        if b is not None and not 0.0 < b[0] < b[1] < 1.0:
            raise ValueError(f"review_band: expected [low, high] with 0 < low < high < 1, got {list(b)}")
        return self


class ExportParams(_Strict):
    parity_images: int = Field(64, ge=1)
    parity_tolerance: float = Field(1e-5, gt=0.0)
    quantize: Literal["none", "float16"] = "none"   # TF.js weight quantisation


class ReportParams(_Strict):
    max_misclassified: int = Field(40, ge=0)   # misclassified test images shown (worst first)
    uncertain_cases: int = Field(8, ge=0)      # correct but closest to the threshold
    reference_defects: int = Field(4, ge=0)    # confidently found defects, for comparison
    thumbnail: int = Field(192, ge=32, le=600) # pixels per shown image


class WebParams(_Strict):
    parity_images: int = Field(32, ge=2)          # test images run through TF.js in Node and Chromium
    parity_tolerance: float = Field(1e-3, gt=0.0) # max |TF.js - SavedModel| defect probability
    chromium: str = "/usr/bin/chromium"           # browser for the parity check and the benchmark
    benchmark_backends: list[Literal["wasm", "webgl", "cpu"]] = ["wasm", "webgl", "cpu"]
    benchmark_repeats: int = Field(50, ge=5)      # timed single-image predictions per backend


class Params(_Strict):
    data: DataParams = DataParams()
    split: SplitParams = SplitParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    export: ExportParams = ExportParams()
    report: ReportParams = ReportParams()
    web: WebParams = WebParams()


def _format(err: ValidationError, source: Path) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key; check its spelling against params.yaml's documented keys"
    more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{source}: {key}: {msg}{more}"


def load_params(path: Path | str | None = None) -> Params:
    """Read and validate the whole params file (all sections, so a typo anywhere fails fast)."""
    source = Path(path) if path is not None else PARAMS_FILE
    if not source.exists():
        raise UserError(f"{source} not found: run the stage from the repository root (where dvc.yaml is)")
    try:
        raw = yaml.safe_load(source.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{source} is not valid YAML ({str(exc).splitlines()[0]}); fix the syntax") from None
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise UserError(_format(exc, source)) from None


def non_default_params(params: Params) -> dict[str, object]:
    """Dotted keys whose value differs from the schema default (for reports and run names)."""
    def walk(cur: object, ref: object, prefix: str, out: dict[str, object]) -> None:
        if isinstance(cur, BaseModel):
            for name in type(cur).model_fields:
                walk(getattr(cur, name), getattr(ref, name), f"{prefix}{name}.", out)
        elif cur != ref:
            out[prefix[:-1]] = cur
    out: dict[str, object] = {}
    walk(params, Params(), "", out)
    return out


def flat_params(params: Params) -> dict[str, object]:
    """All params as a flat dotted-key dict (for MLflow)."""
    out: dict[str, object] = {}
    def walk(d: dict, prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict) and k != "classes":
                walk(v, f"{prefix}{k}.")
            else:
                out[f"{prefix}{k}"] = v
    walk(params.model_dump(), "")
    return out
