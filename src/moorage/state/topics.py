"""Names of the things a blocking query can wait on.

Every change to stored state bumps the index of the topics it touches (`StoredKind.topics` in
kinds.py says which), so a query waiting on one topic wakes only when that topic changed.
"""

from __future__ import annotations


class Topic:
    """Names of the things a blocking query can wait on."""

    SERVICES = "services"
    TASKS = "tasks"
    NODES = "nodes"
    EVENTS = "events"
    SECRETS = "secrets"
    ACL = "acl"
    USER_EVENTS = "user-events"
    REGISTRATIONS = "registrations"
    VOLUMES = "volumes"
    SNAPSHOTS = "snapshots"
    ALERTS = "alerts"  # alert rules, notifiers, silences and the alert state

    @staticmethod
    def volume(name: str) -> str:
        return f"volume:{name}"

    @staticmethod
    def volume_snapshots(volume: str) -> str:
        return f"snapshots:volume:{volume}"

    @staticmethod
    def node_registrations(node: str) -> str:
        return f"registrations:node:{node}"

    @staticmethod
    def registered(name: str) -> str:
        return f"registrations:name:{name}"

    ANY = "*"

    @staticmethod
    def service(name: str) -> str:
        return f"service:{name}"

    @staticmethod
    def service_tasks(name: str) -> str:
        return f"tasks:service:{name}"

    @staticmethod
    def node(name: str) -> str:
        return f"node:{name}"

    @staticmethod
    def node_tasks(name: str) -> str:
        return f"tasks:node:{name}"

    @staticmethod
    def task(task_id: str) -> str:
        return f"task:{task_id}"

    @staticmethod
    def taskdefs(family: str) -> str:
        return f"taskdefs:{family}"

    @staticmethod
    def deployment(deployment_id: str) -> str:
        return f"deployment:{deployment_id}"

    @staticmethod
    def service_deployments(service: str) -> str:
        return f"deployments:service:{service}"
