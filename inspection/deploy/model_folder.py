"""The model folder's one schema: metadata.json validated, and checked against the SavedModel beside it.

Every Python consumer of an exported model reads metadata.json through ``load_metadata`` (the batch CLI's
predictor, the registry's pyfunc model, promote, the report, the resolver, the web stage); the browser page checks
the same keys with web/src/schema.js. Validated: what a consumer decides with (the route rule: threshold, review
band, camera ranges, OOD limit), how it feeds the model (input) and reads it (outputs), the version and the classes.
Any other key is informational (test numbers, provenance, sizes) and allowed as it is. ``serving_function`` checks
the SavedModel's serving signature against the file (input size, output names) where a consumer loads it.

A garbled, incomplete or mismatched folder is refused with one line naming the file and the key, e.g.
``models/metadata.json: route.threshold: Input should be a valid number; the model folder is damaged: ...``.
Imports nothing of ours but inspection.errors and inspection.decision.route: the registry's pyfunc model ships
these three modules with itself (inspection.tracking.registry.PYFUNC_MODULES).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from inspection.decision.route import ROUTES
from inspection.artifacts import METADATA_FILE, SAVED_MODEL_DIR, TFJS_DIR
from inspection.errors import UserError, one_line

FILE = METADATA_FILE
PARTS = (METADATA_FILE, SAVED_MODEL_DIR, TFJS_DIR)   # tfjs/ is optional for the Python consumers


def parts(folder: Path) -> tuple[Path, Path, Path]:
    """(metadata.json, saved_model/, tfjs/) of a model folder."""
    return folder / METADATA_FILE, folder / SAVED_MODEL_DIR, folder / TFJS_DIR


def is_model_folder(folder: Path) -> bool:
    """A folder a Python consumer can load: metadata.json and saved_model/ (tfjs/ only the page needs)."""
    meta, saved, _ = parts(folder)
    return meta.is_file() and saved.is_dir()
DAMAGED = "the model folder is damaged: re-export it (dvc repro export) or download it again"

Unit = Annotated[float, Field(ge=0.0, le=1.0)]
Feature = Literal["brightness", "contrast", "sharpness"]


class _Part(BaseModel):
    """Strict (no "0.5" for 0.5, no NaN), extra keys allowed."""
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)


class Range(_Part):
    min: float
    max: float

    @model_validator(mode="after")
    def _ordered(self):
        if self.min > self.max:
            raise ValueError(f"min {self.min:g} is above max {self.max:g}")
        return self


class Band(_Part):
    low: Unit
    high: Unit

    @model_validator(mode="after")
    def _ordered(self):
        if self.low > self.high:
            raise ValueError(f"low {self.low:g} is above high {self.high:g}")
        return self


Camera = Optional[dict[Feature, Range]]


class Ood(_Part):
    limit: float                          # RETAKE above it
    review_limit: Optional[float] = None  # a photo the model would pass goes to REVIEW above it (at most limit)

    @model_validator(mode="after")
    def _below_limit(self):
        if self.review_limit is not None and self.review_limit > self.limit:
            raise ValueError(f"review_limit {self.review_limit:g} is above limit {self.limit:g}")
        return self


class Retake(_Part):
    camera: Camera            # the RETAKE range: what the model was validated under (null: no camera check)
    ood: Optional[Ood]        # null: no out-of-distribution gate


class Warn(_Part):
    camera: Camera            # the training photos' range: outside it a judged photo carries a camera warning


class Rule(_Part):
    """metadata.json ``route``: inspection.decision.route.make_rule's block, what every consumer decides with."""
    words: list[str]
    threshold: Unit
    review_band: Optional[Band]
    retake: Retake
    warn: Optional[Warn] = None
    rule: str

    @field_validator("words")
    @classmethod
    def _words(cls, v: list[str]) -> list[str]:
        if sorted(v) != sorted(ROUTES):
            raise ValueError(f"should be the four route words {', '.join(ROUTES)}")
        return v


class Input(_Part):
    height: int = Field(ge=1)
    width: int = Field(ge=1)
    channels: Literal[1]
    name: str
    signature: str
    max_pixels: Optional[int] = Field(default=None, ge=1)  # photos above it are refused from their header

    @field_validator("width")
    @classmethod
    def _square(cls, v: int, info: ValidationInfo) -> int:
        if "height" in info.data and v != info.data["height"]:
            raise ValueError(f"{v} differs from input.height {info.data['height']} (the model takes square images)")
        return v


class Outputs(_Part):
    """Signature output -> graph tensor name (what the TF.js graph model calls it)."""
    defect_probability: str
    ood_score: str


class Metadata(_Part):
    version: str
    classes: Annotated[list[str], Field(min_length=2, max_length=2)]
    positive_class: str
    outputs: Outputs
    input: Input
    route: Rule
    threshold: Unit

    @field_validator("positive_class")
    @classmethod
    def _positive_last(cls, v: str, info: ValidationInfo) -> str:
        classes = info.data.get("classes")
        if classes and v != classes[1]:
            raise ValueError(f"{v!r} is not the second of classes {classes} (negative class first)")
        return v

    @field_validator("threshold")
    @classmethod
    def _same_threshold(cls, v: float, info: ValidationInfo) -> float:
        rule = info.data.get("route")
        if rule is not None and abs(v - rule.threshold) > 1e-12:
            raise ValueError(f"{v:g} differs from route.threshold {rule.threshold:g}")
        return v


def _where(loc: tuple) -> str:
    parts = [str(p) for p in loc]
    if "[key]" in parts:   # a dict key that is not allowed, e.g. an unknown camera feature
        i = parts.index("[key]")
        return ".".join(parts[:i - 1]) + f": key {parts[i - 1]!r}"
    return ".".join(parts)


def refusal(where: str | Path, key: str, problem: str) -> UserError:
    """The one line for a damaged model folder: file, key, what is wrong, what to do."""
    return UserError(one_line(f"{where}: {key + ': ' if key else ''}{problem}; {DAMAGED}"))


def validate_metadata(data: object, where: str | Path = FILE) -> dict:
    """``data`` (metadata.json parsed) as it is, when it holds every key a consumer relies on; else the one-line
    UserError naming ``where`` and the first bad key."""
    if not isinstance(data, dict):
        raise refusal(where, "", f"holds {type(data).__name__} instead of a JSON object")
    try:
        Metadata.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        message = "missing" if first["type"] == "missing" else first["msg"].removeprefix("Value error, ")
        more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        raise refusal(where, _where(first["loc"]), message + more) from None
    return data


def metadata_path(folder_or_file: str | Path) -> Path:
    p = Path(folder_or_file)
    return p / FILE if p.is_dir() else p


def load_metadata(folder_or_file: str | Path, where: str | None = None) -> dict:
    """metadata.json of a model folder (or the file itself), read and validated (``validate_metadata``); errors
    name ``where`` (default: the file's path)."""
    path = metadata_path(folder_or_file)
    where = where or str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise refusal(where, "", "is missing") from None
    except OSError as exc:
        raise UserError(f"cannot read {where}: {exc.strerror}; check the permissions") from None
    try:
        data = json.loads(raw)
    except ValueError as exc:   # JSONDecodeError, or bytes that are not UTF-8
        why = f"{exc.msg} at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else exc
        raise refusal(where, "", f"is not valid JSON ({why})") from None
    return validate_metadata(data, where)


def _dims(spec) -> list:
    shape = getattr(spec, "shape", None)
    return [] if shape is None or getattr(shape, "rank", 1) is None else list(shape)


def check_signature(fn, metadata: dict, where: str | Path = FILE) -> None:
    """The SavedModel's serving signature ``fn`` takes what ``metadata`` says (input name, height, width, one
    channel) and gives its outputs; else the one-line refusal. Reads the signature's specs only (no inference)."""
    inp, sig = metadata["input"], metadata["input"]["signature"]
    _, kwargs = fn.structured_input_signature
    if set(kwargs) != {inp["name"]}:
        raise refusal(where, "input.name", f"{inp['name']!r} but the SavedModel's signature {sig!r} takes "
                                           f"{', '.join(map(repr, sorted(kwargs))) or 'nothing'}")
    dims = _dims(kwargs[inp["name"]])
    if len(dims) == 4:
        for i, key in ((1, "height"), (2, "width"), (3, "channels")):
            if dims[i] is not None and int(dims[i]) != int(inp[key]):
                raise refusal(where, f"input.{key}", f"{inp[key]} but the SavedModel's signature {sig!r} takes "
                                                     f"{dims[1]}x{dims[2]}x{dims[3]} images")
    elif dims:
        raise refusal(where, "input", f"the SavedModel's signature {sig!r} takes a {len(dims)}-d input, not "
                                      "[N, height, width, 1]")
    missing = sorted(set(metadata["outputs"]) - set(fn.structured_outputs))
    if missing:
        raise refusal(where, "outputs", f"the SavedModel's signature {sig!r} has no output {', '.join(missing)} "
                                        f"(it has {', '.join(sorted(fn.structured_outputs))})")


def serving_function(module, metadata: dict, where: str | Path = FILE):
    """The signature metadata.json names (input.signature) of a loaded SavedModel ``module``, checked against the
    file (``check_signature``). Keep ``module`` referenced while the function is used: it owns the variables."""
    sig = metadata["input"]["signature"]
    if sig not in module.signatures:
        raise refusal(where, "input.signature", f"the SavedModel has no signature {sig!r} (it has "
                                                f"{', '.join(sorted(module.signatures)) or 'none'})")
    fn = module.signatures[sig]
    check_signature(fn, metadata, where)
    return fn


def load_saved_model(saved_model: str | Path, metadata: dict, where: str | Path = FILE):
    """(module, fn): the SavedModel loaded with TensorFlow and its serving signature checked against ``metadata``
    (``serving_function``). Keep ``module`` while ``fn`` is used."""
    import tensorflow as tf

    try:
        module = tf.saved_model.load(str(saved_model))
    except (OSError, ValueError, IndexError, KeyError, EOFError, tf.errors.OpError) as exc:
        raise UserError(f"{saved_model} cannot be loaded ({type(exc).__name__}: {' '.join(str(exc).split())[:120]}): "
                        "the SavedModel is damaged or cut short; copy the model folder again, `dvc checkout` it, or "
                        "re-run the export stage (dvc repro -f export)") from None
    return module, serving_function(module, metadata, where)


def run_signature(fn, input_name: str, images) -> dict:
    """The one way every consumer calls the SavedModel (the batch CLI, the registry's pyfunc model, export's parity
    check): ``images`` [N, H, W] or [N, H, W, 1], raw 0-255 grey levels, through the serving signature ``fn`` ->
    {output name: float64 [N]}."""
    import numpy as np
    import tensorflow as tf

    x = np.asarray(images, np.float32)
    if x.ndim == 3:
        x = x[..., None]
    out = fn(**{input_name: tf.constant(x)})
    return {k: np.asarray(v.numpy(), np.float64).reshape(-1) for k, v in out.items()}
