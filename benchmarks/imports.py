"""Importing real-world compose files and ECS task definitions: how many import, how fast.

    corpus   tests/fixtures/imports/compose/**.yml (awesome-compose-style apps with their files)
             tests/fixtures/imports/ecs/*.json    (AWS's sample shapes, describe output)
    import   moorage.cli.formats.load(text, "auto", base_dir): what `moorage validate -f FILE`
             runs (parsing, key accounting, validation); builds are planned, never run

Prints one JSON line per figure:

    import_accepted_ratio   files that import (warnings are fine) / all files; params {format}:
                            all, compose, ecs; `goal` 0.9 (the issue's), `expected` the ratio
                            EXPECTED.json's refusals leave
    import_ms_p50 / _p99    one file's import, in-process, over every file, --repeat runs each
    import_refused          the refused files, each with its first error (field path, message)
    cli_validate_ms_p50     labelled `cli`: `moorage validate -f FILE` as a subprocess (process
                            start and imports included) for --cli-files accepted files

Exits 1 when the corpus and the importers disagree: a file refused that EXPECTED.json does not
list, refused for another field than the one it names, or listed but imported.

Run: `python benchmarks/imports.py [--repeat 20] [--cli-files 5] [--cli-repeat 3]`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moorage.cli import formats
from moorage.model import SpecError

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests" / "fixtures" / "imports"
GOAL = 0.9  # import_accepted_ratio: the rest refused with one precise reason each


@dataclass
class Outcome:
    """One corpus file: its timings and, when refused, its first error."""

    name: str
    kind: str
    times_ms: list[float] = field(default_factory=list)
    error: dict[str, str] | None = None


def corpus() -> list[tuple[str, Path]]:
    """(format, path) of every corpus file: compose files by their names, not the other YAML
    files (prometheus.yml, …) that sit beside them."""
    compose = CORPUS / "compose"
    files = [
        *compose.glob("*.y*ml"),
        *compose.glob("*/compose.y*ml"),
        *compose.glob("*/docker-compose.y*ml"),
    ]
    return [("compose", p) for p in sorted(files)] + [
        ("ecs", p) for p in sorted((CORPUS / "ecs").glob("*.json"))
    ]


def load(text: str, base: Path) -> None:
    """The import `moorage validate -f FILE` runs; builds are planned, not executed."""
    formats.load(text, "auto", base)


def run_file(kind: str, path: Path, repeat: int) -> Outcome:
    outcome = Outcome(str(path.relative_to(CORPUS)), kind)
    text = path.read_text()
    for _ in range(repeat):
        start = time.perf_counter()
        try:
            load(text, path.parent)
        except SpecError as exc:
            first = exc.errors[0] if exc.errors else None
            outcome.error = {
                "field": first.field if first else "",
                "message": first.message if first else exc.message,
            }
        except Exception as exc:  # a crash is a finding too: reported, and fails the run
            outcome.error = {"field": "<crash>", "message": f"{type(exc).__name__}: {exc}"}
        outcome.times_ms.append((time.perf_counter() - start) * 1000)
        if outcome.error is not None:
            break  # a refusal is not timed further: the figures time imports
    return outcome


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def emit(metric: str, value: float, unit: str, params: dict[str, Any], **extra: Any) -> None:
    line = {"bench": "imports", "metric": metric, "value": round(value, 4), "unit": unit}
    line["params"] = params
    line.update(extra)
    print(json.dumps(line), flush=True)


def disagreements(outcomes: list[Outcome], expected: dict[str, Any]) -> list[str]:
    """Where the corpus (EXPECTED.json) and the importers disagree, one line each."""
    problems = []
    for outcome in outcomes:
        want = expected.get(outcome.name)
        got = outcome.error
        if got is None and want is not None:
            problems.append(f"{outcome.name}: imported, but should be refused at {want['field']}")
        elif got is not None and want is None:
            problems.append(f"{outcome.name}: refused at {got['field']}: {got['message']}")
        elif got is not None and want is not None and got["field"] != want["field"]:
            problems.append(
                f"{outcome.name}: refused at {got['field']} ({got['message']}), "
                f"expected at {want['field']}"
            )
    return problems


def cli_validate(paths: list[Path], repeat: int) -> list[float]:
    """Wall time of `moorage validate -f FILE` in a new process, this checkout's code."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "src"), env.get("PYTHONPATH", "")) if p
    )
    times = []
    for path in paths:
        for _ in range(repeat):
            start = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "moorage", "validate", "-f", str(path)],
                capture_output=True,
                env=env,
                check=False,
            )
            times.append((time.perf_counter() - start) * 1000)
            if done.returncode != 0:
                raise SystemExit(
                    f"moorage validate -f {path} exited {done.returncode}:\n"
                    f"{done.stderr.decode(errors='replace')}"
                )
    return times


def report(outcomes: list[Outcome], expected: dict[str, Any], repeat: int) -> None:
    allowed = 1 - len(expected) / len(outcomes)
    for kind in ("all", "compose", "ecs"):
        chosen = [o for o in outcomes if kind in ("all", o.kind)]
        accepted = [o for o in chosen if o.error is None]
        wanted = [o for o in chosen if o.name not in expected]
        emit(
            "import_accepted_ratio",
            len(accepted) / len(chosen),
            "ratio",
            {"format": kind, "files": len(chosen)},
            # the goal; `expected`: the share EXPECTED.json's refusals leave (the corpus
            # and the importers agree when value == expected)
            goal=GOAL,
            expected=round(len(wanted) / len(chosen), 4) if kind != "all" else round(allowed, 4),
        )
    times = [t for o in outcomes if o.error is None for t in o.times_ms]
    params = {"files": sum(1 for o in outcomes if o.error is None), "repeat": repeat}
    if times:
        emit("import_ms_p50", percentile(times, 0.5), "ms", params)
        emit("import_ms_p99", percentile(times, 0.99), "ms", params)
    refused = [{"file": o.name, **o.error} for o in outcomes if o.error is not None]
    emit("import_refused", len(refused), "files", {"files": len(outcomes)}, refused=refused)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=20, help="imports of each file (timing)")
    parser.add_argument("--cli-files", type=int, default=5, help="files for the CLI figure")
    parser.add_argument("--cli-repeat", type=int, default=3, help="runs of each CLI file")
    args = parser.parse_args()
    if args.repeat < 1 or args.cli_files < 0 or args.cli_repeat < 1:
        parser.error("--repeat and --cli-repeat must be at least 1, --cli-files at least 0")
    expected = json.loads((CORPUS / "EXPECTED.json").read_text())["refused"]
    outcomes = [run_file(kind, path, args.repeat) for kind, path in corpus()]
    report(outcomes, expected, args.repeat)
    accepted = [CORPUS / o.name for o in outcomes if o.error is None]
    # Every few files, so both formats are among them when both import.
    step = max(1, len(accepted) // max(1, args.cli_files))
    chosen = accepted[::step][: args.cli_files]
    if chosen:
        times = cli_validate(chosen, args.cli_repeat)
        emit(
            "cli_validate_ms_p50",
            statistics.median(times),
            "ms",
            {"files": len(chosen), "repeat": args.cli_repeat},
            label="cli: a new process per run, interpreter start and imports included",
        )
    problems = disagreements(outcomes, expected)
    for problem in problems:
        print(f"corpus and importers disagree: {problem}", file=sys.stderr)
    if problems:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
