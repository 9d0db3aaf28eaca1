"""`moorage tag`: the next `<branch>.<n>` tag of a git repository, created and pushed.

Images are tagged the same way (`registry.local/web:master.6`), so a deploy names a commit.
"""

from __future__ import annotations

import re
import subprocess

import click

from moorage.model import Unavailable


def git(*args: str) -> str:
    try:
        result = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise Unavailable("git is not installed") from None
    if result.returncode != 0:
        raise Unavailable(f"git {args[0]}: {result.stderr.strip() or 'failed'}")
    return result.stdout.strip()


def next_tag(branch: str, tags: list[str]) -> str:
    pattern = re.compile(rf"^{re.escape(branch)}\.(\d+)$")
    numbers = [int(m.group(1)) for t in tags if (m := pattern.match(t))]
    return f"{branch}.{max(numbers, default=0) + 1}"


@click.command()
@click.option("--push/--no-push", default=True, show_default=True, help="Push it to the remote.")
def tag(push: bool) -> None:
    """Create the next <branch>.<n> tag on HEAD (and push it if there is a remote); print it."""
    git("rev-parse", "--git-dir")
    branch = git("rev-parse", "--abbrev-ref", "HEAD")
    if branch == "HEAD":
        raise Unavailable("HEAD is detached: check out a branch first")
    remotes = git("remote").split()
    if push and remotes:
        remote = "origin" if "origin" in remotes else remotes[0]
        git("fetch", "--quiet", "--tags", remote)  # numbers others already pushed
    name = next_tag(branch, git("tag", "--list", f"{branch}.*").split())
    git("tag", name)
    if push and remotes:
        git("push", "--quiet", remote, f"refs/tags/{name}")
    click.echo(name)


COMMANDS = [tag]
