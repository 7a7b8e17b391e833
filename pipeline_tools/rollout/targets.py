"""What a traffic step of `rollout auto` changes, and how: the KServe InferenceService (the patches of
pipeline_tools.rollout.patches, sent by pipeline_tools.rollout.cluster, as `python -m pipeline_tools.rollout`
sends them) or the weights of an nginx upstream (as in the local rehearsal, tests/rehearsal).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pipeline_tools.rollout import cluster
from pipeline_tools.rollout.analysis import AnalysisError
from pipeline_tools.rollout.patches import STANDARD, Change, RolloutError, build_patch, rollout_status
from pipeline_tools.rollout.steps import Action, Step

DEFAULT_UPSTREAM = "pipeline"


class Target(Protocol):
    """Where `auto` moves the traffic. `plan` is pure (what --dry-run prints), `apply` sends it
    and returns what the decision log records."""

    def describe(self, step: Step) -> str: ...

    def plan(self, step: Step) -> str: ...

    def apply(self, step: Step) -> dict[str, Any]: ...


@dataclass
class InferenceServiceTarget:
    """The KServe InferenceService: each step is exactly what `python -m pipeline_tools.rollout` would do for
    it (the same patch, mode detection and admission checks), called directly; `describe` names that
    command, so an operator can repeat or undo a step by hand."""

    name: str
    namespace: str | None = None
    mode: str | None = None  # serverless | standard; None: the service's annotation decides
    storage_uri: str | None = None
    canary_name: str | None = None

    def change(self, step: Step) -> Change:
        if step.action == Action.CANARY or (step.action == Action.PROMOTE and self.mode == STANDARD):
            return Change(step, self.storage_uri, self.canary_name)
        # Serverless promote takes no storageUri (the latest revision is promoted); rollback none at all.
        return Change(step)

    def argv(self, step: Step) -> list[str]:
        """The command line of the same step."""
        change = self.change(step)
        argv = (["-n", self.namespace] if self.namespace else []) + ["--name", self.name, step.action]
        argv += [str(step.percent)] if step.action == Action.CANARY else []
        argv += ["--storage-uri", change.storage_uri] if change.storage_uri else []
        argv += ["--canary-name", change.canary_name] if change.canary_name else []
        return argv + (["--mode", self.mode] if self.mode else [])

    def describe(self, step: Step) -> str:
        return f"python -m pipeline_tools.rollout {' '.join(self.argv(step))}"

    def plan(self, step: Step) -> str:
        if self.mode is None:
            raise AnalysisError(f"{self.describe(step)}: a plan needs the mode (serverless|standard)")
        try:
            return json.dumps(build_patch(self.change(step), self.mode))
        except RolloutError as error:
            raise AnalysisError(f"{self.describe(step)} --dry-run failed: {error}") from error

    def apply(self, step: Step) -> dict[str, Any]:
        try:
            api, namespace = cluster.connect(self.namespace)
            isvc = cluster.apply_change(api, namespace, self.name, self.change(step), self.mode, self._warn)
        except RolloutError as error:
            raise AnalysisError(f"{self.describe(step)} failed: {error}") from error
        except Exception as error:
            message = cluster.failure(error)
            if message is None:
                raise
            raise AnalysisError(f"{self.describe(step)} failed: {message}") from error
        return {"command": self.describe(step), "status": rollout_status(isvc)}

    @staticmethod
    def _warn(message: str) -> None:
        print(f"rollout auto: warning: {message}", file=sys.stderr)


SERVER_LINE = re.compile(r"^(\s*)server\s+(\S+)(\s[^;]*)?;\s*$")


def upstream_block(name: str, servers: dict[str, int | None], extra: Sequence[str] = ()) -> str:
    """An nginx upstream block: one `server` line per address, `weight=N`, or `down` for None/0
    (nginx refuses weight=0)."""
    lines = [f"upstream {name} {{"] + [f"    {_server_line(addr, weight)}" for addr, weight in servers.items()]
    return "\n".join(lines + [f"    {line}" for line in extra] + ["}"])


def _server_line(addr: str, weight: int | None) -> str:
    return f"server {addr} weight={weight};" if weight else f"server {addr} down;"


@dataclass
class NginxTarget:
    """An nginx upstream of the stable and the canary server: each step rewrites their `server`
    lines (weights 100 - p and p; 0 is `down`, nginx allows no weight 0), then `nginx -t` and
    `nginx -s reload` (new workers take the weights, old ones finish their requests). Everything
    else in the file, and in the block, stays as it is."""

    conf: Path
    stable: str
    canary: str
    upstream: str = DEFAULT_UPSTREAM
    prefix: Path | None = None
    nginx: str = "nginx"
    error_log: Path | None = None

    def weights(self, step: Step) -> dict[str, int | None]:
        if step.action == Action.CANARY:
            assert step.percent is not None
            return {self.stable: 100 - step.percent, self.canary: step.percent}
        if step.action == Action.PROMOTE:
            return {self.stable: None, self.canary: 100}
        return {self.stable: 100, self.canary: None}

    def command(self, *args: str) -> list[str]:
        argv = [self.nginx] + (["-p", str(self.prefix)] if self.prefix else [])
        argv += ["-e", str(self.error_log)] if self.error_log else []
        return argv + ["-c", str(self.conf), *args]

    def describe(self, step: Step) -> str:
        return f"upstream {self.upstream} in {self.conf}, then {' '.join(self.command('-s', 'reload'))}"

    def plan(self, step: Step) -> str:
        text = self.conf.read_text() if self.conf.exists() else upstream_block(self.upstream, {})
        return self._block(self.rewritten(text, self.upstream, self.weights(step)), self.upstream)

    def apply(self, step: Step) -> dict[str, Any]:
        weights = self.weights(step)
        self.rewrite(self.conf, self.upstream, weights)
        self.reload_command(self.command())
        return {
            "conf": str(self.conf),
            "upstream": self.upstream,
            "weights": {addr: weight or "down" for addr, weight in weights.items()},
        }

    @staticmethod
    def _block(text: str, upstream: str) -> str:
        match = re.search(rf"^[ \t]*upstream\s+{re.escape(upstream)}\s*\{{[^}}]*\}}", text, re.MULTILINE)
        if not match:
            raise AnalysisError(f"no `upstream {upstream} {{ ... }}` block in the nginx config")
        return _dedent(match.group(0))

    @staticmethod
    def rewritten(text: str, upstream: str, weights: dict[str, int | None]) -> str:
        """`text` with the upstream's server lines for these addresses replaced (missing ones added
        at the top of the block); AnalysisError without the block."""
        pattern = re.compile(rf"(^[ \t]*upstream\s+{re.escape(upstream)}\s*\{{)([^}}]*)(\}})", re.MULTILINE)
        match = pattern.search(text)
        if not match:
            raise AnalysisError(f"no `upstream {upstream} {{ ... }}` block in the nginx config")
        head, body, tail = match.groups()
        indent = re.match(r"[ \t]*", head).group(0) + "    "  # type: ignore[union-attr]
        pending = dict(weights)
        lines = []
        for line in body.split("\n"):
            server = SERVER_LINE.match(line)
            if server and server.group(2) in pending:
                lines.append(f"{server.group(1)}{_server_line(server.group(2), pending.pop(server.group(2)))}")
            else:
                lines.append(line)
        added = [f"{indent}{_server_line(addr, weight)}" for addr, weight in pending.items()]
        if added:
            lines = lines[:1] + added + lines[1:]
        new_body = "\n".join(lines)
        if "\n" not in new_body:
            new_body += "\n" + indent[:-4]
        return text[: match.start()] + head + new_body + tail + text[match.end() :]

    @classmethod
    def rewrite(cls, conf: Path, upstream: str, weights: dict[str, int | None]) -> None:
        """Rewrite the file atomically (readers see the old or the new config, never half)."""
        new = cls.rewritten(conf.read_text(), upstream, weights)
        fd, tmp = tempfile.mkstemp(prefix=".nginx-", dir=conf.parent)
        with os.fdopen(fd, "w") as handle:
            handle.write(new)
        os.chmod(tmp, 0o644)
        os.replace(tmp, conf)

    @staticmethod
    def reload_command(base: list[str]) -> None:
        for args in (["-t", "-q"], ["-s", "reload"]):
            done = subprocess.run(base + args, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
            if done.returncode != 0:
                raise AnalysisError(f"`{' '.join(base + args)}` exited {done.returncode}: {done.stderr.strip()}")


def _dedent(block: str) -> str:
    lines = block.split("\n")
    first = re.match(r"[ \t]*", lines[0]).group(0)  # type: ignore[union-attr]
    return "\n".join(line[len(first) :] if line.startswith(first) else line for line in lines)
