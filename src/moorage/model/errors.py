"""The moorage exception tree, shared by every layer.

    MoorageError
     ├── SpecError          invalid input: a spec, an API body, a CLI flag (HTTP 400, exit 2)
     ├── NotFound           no such service, task, node, task definition (HTTP 404, exit 1)
     ├── Conflict           a compare-and-swap lost, or the change clashes with state (HTTP 409, exit 1)
     ├── Unauthorized       missing or wrong credentials, e.g. a join token (HTTP 401, exit 1)
     ├── Forbidden          the ACL token does not grant this (HTTP 403, exit 1)
     └── Unavailable        a dependency is down or not ready yet (HTTP 503, exit 1)

Errors map to HTTP statuses in `moorage.server.errors` and to exit codes in
`moorage.cli.main`, in exactly one function each. Every error carries a stable `code`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FieldError:
    """One problem with one field, named by its path (`containers[0].memory`)."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message

    def to_json(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class FieldProblems(ValueError):
    """Raised by cross-field validators: problems with paths relative to the validated model."""

    def __init__(self, problems: list[FieldError]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


class MoorageError(Exception):
    """Base of every error moorage raises on purpose."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "errors": []}


class SpecError(MoorageError):
    """Invalid input; carries every field error found, not only the first."""

    code = "invalid_spec"

    def __init__(self, errors: list[FieldError], code: str | None = None) -> None:
        self.errors = list(errors)
        if code is not None:
            self.code = code
        super().__init__("; ".join(str(e) for e in self.errors) or "invalid input")

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "errors": [e.to_json() for e in self.errors],
        }


class NotFound(MoorageError):
    code = "not_found"


class Conflict(MoorageError):
    code = "conflict"


class Unauthorized(MoorageError):
    """A request without valid credentials (an agent's join token)."""

    code = "unauthorized"


class Forbidden(MoorageError):
    """ACLs are on and the request's token (or the anonymous one) lacks the permission."""

    code = "permission_denied"


class Unavailable(MoorageError):
    code = "unavailable"
