"""The files under a folder that really live under it: how the flows and templates folders are
read (`bot check`, start-up, every reload).

A symbolic link in git is text anyone can commit: `templates/p/t.j2 -> /etc/bot/ig-token` had
sent the token as a DM. A file or folder that resolves outside the root is refused, by name
and with where it points; a link that stays inside the root is followed like any file.
Hidden names (`.git`, an editor's `.t.j2.swp`) are skipped, as before.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Found", "Listing", "Refused", "files_under"]


@dataclass(frozen=True, slots=True)
class Found:
    """A file to read: `path` as listed (root/rel, for messages), `real` to open."""

    path: Path
    rel: str
    real: Path


@dataclass(frozen=True, slots=True)
class Refused:
    """A file or folder under the root that may not be read, and why in a user's words."""

    path: Path
    rel: str
    reason: str


@dataclass(frozen=True, slots=True)
class Listing:
    files: tuple[Found, ...]
    refused: tuple[Refused, ...]


# Real folders hold dozens of entries; folders linked within the root are listed under each
# of their names, so a web of such links could otherwise list the same files without end.
MAX_ENTRIES = 100_000


def files_under(root: Path, what: str, wanted: Callable[[str], bool]) -> Listing:
    """Every file under `root` whose name `wanted` accepts and that lives under the root,
    sorted by path; `what` names the folder in refusals ("the templates folder")."""
    files: list[Found] = []
    refused: list[Refused] = []
    if not root.is_dir():
        return Listing((), ())
    seen = 0
    top = Path(os.path.realpath(root))
    # (listed folder, its relative name, where it really is, the real folders above it)
    pending: list[tuple[Path, str, Path, frozenset[Path]]] = [(root, "", top, frozenset())]
    while pending:
        folder, rel, real, above = pending.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            refused.append(Refused(folder, rel, f"cannot read the folder: {exc.strerror}"))
            continue
        seen += len(entries)
        if seen > MAX_ENTRIES:
            reason = f"more than {MAX_ENTRIES:,} entries under {what} (folders linked in loops?)"
            refused.append(Refused(root, "", f"{reason}; the rest is not read"))
            break
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path, name = folder / entry.name, f"{rel}{entry.name}"
            target = Path(os.path.realpath(path)) if entry.is_symlink() else real / entry.name
            inside = target.is_relative_to(top)
            try:
                is_dir, is_file = entry.is_dir(), entry.is_file()
            except OSError:
                continue  # gone since the listing, or a link to nothing: not a file to read
            if is_dir:
                if not inside:
                    reason = f"a folder linked to {target}, outside {what} {top}"
                    refused.append(Refused(path, name, f"{reason}; {_FIX}"))
                elif target not in above and target != real:
                    pending.append((path, f"{name}/", target, above | {real}))
            elif is_file and wanted(entry.name):
                if inside:
                    files.append(Found(path, name, target))
                else:
                    reason = f"a link to {target}, outside {what} {top}"
                    refused.append(Refused(path, name, f"{reason}; {_FIX}"))
    files.sort(key=lambda f: f.path)
    refused.sort(key=lambda r: r.path)
    return Listing(tuple(files), tuple(refused))


_FIX = "refused: copy it in, or link only to a place inside the folder"
