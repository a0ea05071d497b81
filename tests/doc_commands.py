"""The shell commands README.md and docs/*.md show in ```bash / ```sh / ```console blocks, as token lists.

Plain ``` blocks are text (synopses, layouts); ```console blocks count only the lines after a ``$`` prompt.
Continuation lines (``\\``) are joined and ``#`` comments dropped.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from repo_root import REPO

SHELL_LANGUAGES = {"bash", "console", "sh", "shell"}
FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass(frozen=True)
class DocCommand:
    source: str  # e.g. "docs/training.md:12"
    tokens: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.tokens)

    def segments(self) -> list[list[str]]:
        """``a && b`` -> [a-tokens, b-tokens]."""
        parts: list[list[str]] = [[]]
        for token in self.tokens:
            if token == "&&":
                parts.append([])
            else:
                parts[-1].append(token)
        return [p for p in parts if p]


def doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _tokens(text: str) -> tuple[str, ...]:
    lexer = shlex.shlex(text, posix=True, punctuation_chars="&|<>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return tuple(lexer)


def extract_commands(path: Path) -> list[DocCommand]:
    commands: list[DocCommand] = []
    language: str | None = None
    pending = ""
    start = 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fence = FENCE.match(raw.strip())
        if fence:
            language = None if language is not None else fence.group(1).lower()
            continue
        if language not in SHELL_LANGUAGES:
            continue
        line = raw.strip()
        if not pending:
            if line.startswith("$ "):
                line = line[2:]
            elif language == "console":
                continue  # output lines of a console transcript
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        tokens = _tokens(pending + line)
        pending = ""
        if tokens:
            commands.append(DocCommand(f"{path.relative_to(REPO)}:{start}", tokens))
    return commands


def all_commands() -> list[DocCommand]:
    return [cmd for path in doc_files() for cmd in extract_commands(path)]


if __name__ == "__main__":
    for cmd in all_commands():
        print(f"{cmd.source}\t{cmd.segments()}")
