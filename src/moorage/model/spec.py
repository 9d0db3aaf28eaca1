"""Parse the moorage YAML spec into validated `ServiceSpec`s, with every error and its field path.

parse_specs(text)  -> list[ServiceSpec]       raises SpecError (all errors, each with a path)
validate_body(Model, data) -> Model            the same error shape for any API body
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .errors import FieldError, FieldProblems, SpecError
from .service import ServiceSpec
from .volume import Volume

M = TypeVar("M", bound=BaseModel)


def field_path(loc: tuple[int | str, ...]) -> str:
    """(`containers`, 0, `memory`) -> `containers[0].memory`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _message(err: dict[str, Any]) -> str:
    kind, msg = err["type"], str(err["msg"])
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "is required"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if msg.startswith("Input should be"):
        msg = "must be" + msg[len("Input should be") :]
    elif msg.startswith("String should"):
        msg = "must" + msg[len("String should") :]
    elif msg.startswith("List should"):
        msg = "must" + msg[len("List should") :]
    return msg


def errors_from(exc: ValidationError, prefix: str = "") -> list[FieldError]:
    out: list[FieldError] = []
    for err in exc.errors():
        # Drop pydantic's union/validator step names (`function-after[...]`) from the path.
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        base = field_path(loc)
        cause = (err.get("ctx") or {}).get("error")
        found = (
            cause.problems
            if isinstance(cause, FieldProblems)
            else [FieldError("", _message(dict(err)))]
        )
        for problem in found:
            path = _join(base, problem.field)
            if prefix:
                path = _join(prefix, path)
            out.append(FieldError(path, problem.message))
    return out


def _join(base: str, sub: str) -> str:
    if not base or not sub:
        return base or sub
    return base + sub if sub.startswith("[") else f"{base}.{sub}"


def validate_body(model: type[M], data: Any, prefix: str = "") -> M:
    """Validate one API body or spec document; raise SpecError listing every problem."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise SpecError(errors_from(exc, prefix)) from None


def unencodable(data: Any, where: str = "") -> str | None:
    """Where a parsed document holds a string that is not text (a lone UTF-16 surrogate, which
    JSON's and YAML's `\\ud800` escapes can write): None when there is none."""
    if isinstance(data, str):
        try:
            data.encode()
        except UnicodeEncodeError:
            return where
        return None
    if isinstance(data, dict):
        for key, value in data.items():
            at = f"{where}.{key}" if where else str(key)
            if (found := unencodable(key, at)) is not None:
                return found
            if (found := unencodable(value, at)) is not None:
                return found
    if isinstance(data, list):
        for index, item in enumerate(data):
            if (found := unencodable(item, f"{where}[{index}]")) is not None:
                return found
    return None


def refuse_unencodable(data: Any) -> None:
    if (where := unencodable(data)) is not None:
        message = "is not text: a lone UTF-16 surrogate (\\ud800-\\udfff) has no UTF-8 form"
        raise SpecError([FieldError(where, message)], code="invalid_body")


def load_yaml_documents(text: str) -> list[Any]:
    import yaml  # here: the agent, which imports this package, parses no YAML

    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError([FieldError(where or "yaml", f"YAML syntax error: {problem}")]) from None
    if not docs:
        raise SpecError([FieldError("", "the file holds no spec document")])
    refuse_unencodable(docs if len(docs) > 1 else docs[0])
    return docs


def parse_specs(text: str) -> list[ServiceSpec]:
    """Parse one or more `---`-separated service documents; report errors of all of them."""
    docs = load_yaml_documents(text)
    specs: list[ServiceSpec] = []
    errors: list[FieldError] = []
    for index, doc in enumerate(docs):
        prefix = f"[{index}]" if len(docs) > 1 else ""
        if not isinstance(doc, dict):
            errors.append(FieldError(prefix, "a spec document must be a mapping"))
            continue
        try:
            specs.append(validate_body(ServiceSpec, doc))
        except SpecError as exc:
            errors.extend(
                FieldError(f"{prefix}{'.' if prefix and e.field else ''}{e.field}", e.message)
                for e in exc.errors
            )
    names = [s.service for s in specs]
    for name in sorted({n for n in names if names.count(n) > 1}):
        errors.append(FieldError("service", f"service {name!r} appears in several documents"))
    if errors:
        raise SpecError(errors)
    return specs


def volume_problems(
    spec: ServiceSpec, volumes: Mapping[str, Volume], prefix: str = ""
) -> list[FieldError]:
    """The spec's cluster volumes against those that exist: a missing one that is not
    autoprovisioned, or one that exists with another driver or access mode."""
    problems = []
    for key, entry in spec.volumes.items():
        if entry.scope != "shared":
            continue
        name = entry.volume_name(key)
        at = f"{prefix}volumes.{key}"
        existing = volumes.get(name)
        if existing is None:
            if not entry.autoprovision:
                problems.append(
                    FieldError(
                        at,
                        f"no volume named {name!r}: create it (moorage volume create {name} "
                        f"--driver {entry.driver}) or set autoprovision: true",
                    )
                )
            continue
        if existing.driver != entry.driver:
            problems.append(
                FieldError(
                    f"{at}.driver",
                    f"volume {name!r} exists with driver {existing.driver}, not {entry.driver}",
                )
            )
        if existing.access != entry.access:
            problems.append(
                FieldError(
                    f"{at}.access",
                    f"volume {name!r} exists with access {existing.access}, not {entry.access}",
                )
            )
    return problems


def specs_from_json(body: Any) -> list[ServiceSpec]:
    """One spec object, or a non-empty list of them (the API's JSON form of a deploy)."""
    if isinstance(body, dict):
        return [validate_body(ServiceSpec, body)]
    if not isinstance(body, list) or not body:
        raise SpecError([FieldError("", "expected a spec object or a non-empty list of them")])
    specs, errors = [], []
    for position, item in enumerate(body):
        try:
            specs.append(validate_body(ServiceSpec, item, prefix=f"[{position}]"))
        except SpecError as exc:
            errors.extend(exc.errors)
    if errors:
        raise SpecError(errors)
    return specs
