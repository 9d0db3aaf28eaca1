"""The moorage model: pydantic structs every layer shares, and the spec parser.

Nothing here does I/O. Every other package may import this one; it imports none of them.
"""

from .deployment import Deployment, DeploymentStatus
from .duration import Duration, format_duration, parse_duration
from .errors import (
    Conflict,
    FieldError,
    Forbidden,
    MoorageError,
    NotFound,
    SpecError,
    Unauthorized,
    Unavailable,
)
from .event import Event
from .node import Eligibility, Node, NodeStatus
from .secret import SECRET_NAME, Secret, SecretInfo, SecretValue
from .service import (
    Constraint,
    DeploymentPolicy,
    Discovery,
    Placement,
    RestartPolicy,
    Service,
    ServiceSpec,
)
from .spec import field_path, parse_specs, validate_body
from .task import CheckState, ContainerState, Desired, Health, Task, TaskStatus
from .taskdef import Container, HealthCheck, Mount, PortSpec, TaskDefinition, VolumeSpec

__all__ = [
    "SECRET_NAME",
    "CheckState",
    "Conflict",
    "Constraint",
    "Container",
    "ContainerState",
    "Deployment",
    "DeploymentPolicy",
    "DeploymentStatus",
    "Desired",
    "Discovery",
    "Duration",
    "Eligibility",
    "Event",
    "FieldError",
    "Forbidden",
    "Health",
    "HealthCheck",
    "MoorageError",
    "Mount",
    "Node",
    "NodeStatus",
    "NotFound",
    "Placement",
    "PortSpec",
    "RestartPolicy",
    "Secret",
    "SecretInfo",
    "SecretValue",
    "Service",
    "ServiceSpec",
    "SpecError",
    "Task",
    "TaskDefinition",
    "TaskStatus",
    "Unauthorized",
    "Unavailable",
    "VolumeSpec",
    "field_path",
    "format_duration",
    "parse_duration",
    "parse_specs",
    "validate_body",
]
