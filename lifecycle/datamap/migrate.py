"""`lifecycle datamap migrate`: rewrite a map's deprecated spellings to today's canonical ones.

The loader keeps accepting every spelling listed in :data:`DEPRECATED`; this only writes them the
way the docs and the shipped maps do, so a map keeps loading as the language moves on. The edits
are made in the file's text at the positions the YAML parser reports for each key and scalar, so
comments, blank lines, quoting and the order of keys stay exactly as they were (no YAML
round-trip library needed). The result must load, to the same model as the original does.

To deprecate a spelling, add one entry to :data:`DEPRECATED` (keep the loader accepting it): a
path pattern (``*`` matches any key or list item), what is written there today and what it
becomes.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lifecycle.datamap.loader import _PlainLoader, parse_datamap
from lifecycle.datamap.model import DataMap, DataMapError
from lifecycle.datamap.paths import MAX_DATAMAP_BYTES
from lifecycle.datamap.periods import Period

Path_ = tuple[Any, ...]

# The spellings of a period the docs and shipped maps use: 5y, 6mo, 2w, 30d, 1y6mo, 0d.
_CANONICAL_PERIOD = re.compile(r"(\d+(y|mo|w|d))+")


def _period(value: Any) -> str | None:
    """``6m`` -> ``6mo``, ``P5Y`` -> ``5y``, ``3 months`` -> ``3mo``, ``0`` -> ``0d``; None when
    already canonical or not a period at all (the loader then reports it)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    if isinstance(value, str) and _CANONICAL_PERIOD.fullmatch(value.strip()):
        return None
    try:
        return str(Period.parse(value))
    except ValueError:
        return None


@dataclass(frozen=True)
class Deprecated:
    """One spelling the loader still accepts, and the one to write instead.

    ``where``: the path of the scalar (a key's value) or, with ``rename``, of the key itself.
    ``value``: the new text for a value there, or None when it is already current. ``rename``:
    the new name of the key at ``where`` (its value is kept as written).
    """

    where: Path_
    old: str
    new: str
    since: str
    value: Callable[[Any], str | None] | None = None
    rename: str | None = None


# Every deprecated spelling, in one table (docs/datamap.md lists the same).
DEPRECATED: tuple[Deprecated, ...] = (
    Deprecated(("retention", "*", "period"), "6m, P5Y, P3M, 5 years, 0", "6mo, 5y, 3mo, 5y, 0d",
               "0.x: the first demo map listed 6m and P5Y", value=_period),
    Deprecated(("subject", "dormancy", "inactive_for"), "1 year, P1Y, 12m", "1y, 1y, 12mo",
               "same", value=_period),
    Deprecated(("tables", "*", "purpose_end", "*", "age", "after"), "P3Y, 36m", "3y, 36mo",
               "same", value=_period),
)  # fmt: skip


@dataclass(frozen=True)
class Edit:
    line: int  # 1-based
    start: int  # character offsets in the text
    end: int
    new: str
    rule: Deprecated


def _matches(pattern: Path_, path: Path_) -> bool:
    return len(pattern) == len(path) and all(
        p in ("*", q) for p, q in zip(pattern, path, strict=True)
    )


def _walk(node: yaml.Node, path: Path_) -> Iterator[tuple[Path_, yaml.Node, yaml.Node | None]]:
    """(path, value node, key node or None) for every node under ``node``."""
    if isinstance(node, yaml.MappingNode):
        for knode, vnode in node.value:
            key = knode.value if isinstance(knode, yaml.ScalarNode) else None
            yield (*path, key), vnode, knode
            yield from _walk(vnode, (*path, key))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield (*path, i), item, None
            yield from _walk(item, (*path, i))


def _quoted(node: yaml.ScalarNode, text: str) -> str:
    """``text`` in the quotes the original scalar used, if any."""
    style = node.style or ""
    if style == "'":
        return "'" + text.replace("'", "''") + "'"
    if style == '"':
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def find_edits(text: str, source: str = "<data map>") -> list[Edit]:
    """The edits that bring ``text`` to today's spellings (none: already current). A file that
    is not YAML raises the loader's one-line DataMapError."""
    try:
        root = yaml.compose(text, Loader=_PlainLoader)
    except yaml.YAMLError:
        parse_datamap(text, source)  # raises the loader's one-line error with the line
        raise
    if root is None:
        return []
    constructor = yaml.constructor.SafeConstructor()
    edits: list[Edit] = []
    for path, vnode, knode in _walk(root, ()):
        for rule in DEPRECATED:
            if not _matches(rule.where, path):
                continue
            if rule.rename is not None and knode is not None:
                edits.append(Edit(knode.start_mark.line + 1, knode.start_mark.index,
                                  knode.end_mark.index, rule.rename, rule))  # fmt: skip
            if rule.value is not None and isinstance(vnode, yaml.ScalarNode):
                new = rule.value(constructor.construct_object(vnode))
                if new is not None:
                    edits.append(Edit(vnode.start_mark.line + 1, vnode.start_mark.index,
                                      vnode.end_mark.index, _quoted(vnode, new), rule))  # fmt: skip
    return sorted(edits, key=lambda e: e.start)


def apply_edits(text: str, edits: list[Edit]) -> str:
    out, pos = [], 0
    for e in edits:
        out.append(text[pos : e.start])
        out.append(e.new)
        pos = e.end
    out.append(text[pos:])
    return "".join(out)


def same_model(a: DataMap, b: DataMap) -> bool:
    """Whether two maps mean the same: every attribute but where it came from (the source, and
    where each key sits: a renamed key moves; no edit adds or removes a line)."""
    skip = {"source", "_marks"}
    return {k: v for k, v in vars(a).items() if k not in skip} == {
        k: v for k, v in vars(b).items() if k not in skip
    }


@dataclass(frozen=True)
class Migration:
    text: str
    edits: list[Edit]
    original: str

    @property
    def current(self) -> bool:
        return not self.edits

    def diff(self, source: str) -> str:
        return "".join(
            difflib.unified_diff(
                self.original.splitlines(keepends=True),
                self.text.splitlines(keepends=True),
                fromfile=f"{source} (now)",
                tofile=f"{source} (migrated)",
            )
        )


def migrate(text: str, source: str = "<data map>") -> Migration:
    """The map ``text`` in today's spellings, checked: it loads, to the same model as the
    original (when that loads). Raises the loader's one-line DataMapError otherwise."""
    edits = find_edits(text, source)
    new = apply_edits(text, edits)
    try:
        before: DataMap | None = parse_datamap(text, source)
    except DataMapError:
        before = None  # a map that no longer loads: the migrated one must
    after = parse_datamap(new, f"{source} (migrated)")
    if before is not None and not same_model(before, after):
        raise DataMapError(source, None, "the migrated map means something else; not migrated "
                           "(please report this)")  # fmt: skip
    return Migration(new, edits, text)


def read_map(path: Path) -> str:
    """The map's text, or the loader's one-line error (missing, unreadable, too big)."""
    try:
        if path.stat().st_size > MAX_DATAMAP_BYTES:
            raise DataMapError(str(path), None, f"the file is over {MAX_DATAMAP_BYTES} bytes")
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataMapError(str(path), None, "file not found (check LIFECYCLE_DATA_MAP)") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise DataMapError(str(path), None, f"cannot read the file ({reason})") from None


def write_migrated(path: Path, text: str) -> Path:
    """Replace the map with ``text`` (atomically, same mode), keeping the old file beside it as
    ``NAME.bak`` (``NAME.bak.N`` when that exists). Returns the backup's path."""
    backup = path.with_name(path.name + ".bak")
    n = 1
    while backup.exists():
        backup = path.with_name(f"{path.name}.bak.{n}")
        n += 1
    shutil.copy2(path, backup)
    tmp = path.with_name(f".{path.name}.migrating")
    tmp.write_text(text, encoding="utf-8")
    shutil.copymode(path, tmp)
    os.replace(tmp, path)
    return backup
