"""Unique identifiers (고유식별정보, 개인정보 보호법 제24조, 제24조의2) in the data map.

A map flags the categories that hold a unique identifier under ``unique_identifiers:``::

    unique_identifiers:
      rrn: {kind: rrn}                                  # 주민등록번호, no statutory basis
      passport_no: {kind: passport, basis: "여권법 제21조"}  # held because a law permits it

``kind`` is one of :data:`KINDS`. ``basis`` is the statute that permits holding the
identifier, as a plain "law + article" string (it must name an article: ``제N조``). Consent is
not a basis for an RRN (제24조의2①) nor, without a separate consent, for the others, so a
flagged category without ``basis`` is *held unlawfully*: ``lifecycle datamap check`` reports
every live row holding a value, ``lifecycle identifiers destroy`` clears it, and corrections,
provisions and 열람 packages never carry it.

Pure: parsing and lookups only; counting and destroying live in ``lifecycle.engine.identifiers``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lifecycle.core.errors import UserError

# The functions below take a ``lifecycle.datamap.model.DataMap``; it is typed ``Any`` because
# the model imports this module (the datamap package allows no import cycle).
DataMap = Any

# kind -> (Korean name, the article that restricts it)
KINDS: dict[str, tuple[str, str]] = {
    "rrn": ("주민등록번호", "개인정보 보호법 제24조의2 (주민등록번호 처리의 제한)"),
    "passport": ("여권번호", "개인정보 보호법 제24조 (고유식별정보의 처리 제한)"),
    "driver_licence": ("운전면허번호", "개인정보 보호법 제24조 (고유식별정보의 처리 제한)"),
    "alien_registration": ("외국인등록번호", "개인정보 보호법 제24조 (고유식별정보의 처리 제한)"),
}
_ARTICLE = re.compile(r"제\s*\d+\s*조")


@dataclass(frozen=True)
class FlaggedCategory:
    """A category holding a unique identifier; ``basis`` None: no statute permits holding it."""

    category: str
    kind: str
    basis: str | None = None

    @property
    def label(self) -> str:
        return KINDS[self.kind][0]

    @property
    def restriction(self) -> str:
        """The article restricting this kind of identifier (cited in the ledger and refusals)."""
        return KINDS[self.kind][1]

    @property
    def lawful(self) -> bool:
        return self.basis is not None


def parse(
    raw: Mapping[str, Any],
    vocabulary: Iterable[str],
    err: Callable[..., Exception],
) -> dict[str, FlaggedCategory]:
    """``unique_identifiers:`` of a map; ``err(message, *path)`` makes the one-line error."""
    known = set(vocabulary)
    out: dict[str, FlaggedCategory] = {}
    for cat, spec in raw.items():
        where = ("unique_identifiers", cat)
        if cat not in known:
            raise err(
                f"unique_identifiers: category {cat!r} is held by no table (tables hold: "
                f"{', '.join(sorted(known))})",
                *where,
            )
        if not isinstance(spec, dict) or "kind" not in spec:
            raise err(
                f"unique_identifiers.{cat} must be {{kind: {'|'.join(KINDS)}}} (optionally with "
                'basis: the statute permitting it, e.g. "여권법 제21조")',
                *where,
            )
        extra = sorted(set(spec) - {"kind", "basis"})
        if extra:
            raise err(f"unique_identifiers.{cat}: unknown key {extra[0]!r}", *where, extra[0])
        kind = spec["kind"]
        if kind not in KINDS:
            raise err(
                f"unique_identifiers.{cat}.kind {kind!r} is not one of {', '.join(KINDS)}",
                *where,
                "kind",
            )
        basis = spec.get("basis")
        if basis is not None:
            if not isinstance(basis, str) or not _ARTICLE.search(basis):
                raise err(
                    f"unique_identifiers.{cat}.basis must name a law and its article (e.g. "
                    '"여권법 제21조"); leave it out when no statute permits holding it',
                    *where,
                    "basis",
                )
            basis = " ".join(basis.split())
        out[cat] = FlaggedCategory(cat, kind, basis)
    return out


def locations(dm: DataMap, category: str) -> list[tuple[str, tuple[str, ...]]]:
    """``(table, columns)`` of every mapped table holding ``category``, in map order."""
    return [(t.name, t.columns[category]) for t in dm.tables.values() if category in t.columns]


def flagged_columns(dm: DataMap, table: str) -> dict[str, FlaggedCategory]:
    """column -> its flag, for the columns of ``table`` that hold a flagged category."""
    tm = dm.tables.get(table)
    if tm is None:
        return {}
    return {
        c: dm.identifiers[cat] for cat, cols in tm.columns.items() if cat in dm.identifiers
        for c in cols
    }  # fmt: skip


def refusal(flag: FlaggedCategory, field: str, what: str) -> str:
    """One line refusing to ``what`` (correct, provide) a field holding a unique identifier."""
    held = f"held under {flag.basis}" if flag.basis else "held without a statutory basis"
    return (
        f"field {field} holds a unique identifier ({flag.label}, {flag.restriction}; {held}) "
        f"and cannot be {what}"
        + ("" if flag.basis else f"; destroy it: lifecycle identifiers destroy {flag.category}")
    )


def destroyable(dm: DataMap, category: str, *, force: bool) -> FlaggedCategory:
    """The flag of a category ``lifecycle identifiers destroy`` may clear, or a UserError."""
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", category or ""):
        raise UserError("the category must be a lower_snake_case name such as rrn")
    if category not in dm.categories_in_use():
        raise UserError(f"unknown category {category!r}: no table of the data map holds it")
    flag: FlaggedCategory | None = dm.identifiers.get(category)
    if flag is None:
        flagged = ", ".join(sorted(dm.identifiers)) or "none"
        raise UserError(
            f"category {category!r} is not flagged under unique_identifiers: in the data map "
            f"(flagged: {flagged}); erase other data with lifecycle erase or the sweep"
        )
    if flag.basis and not force:
        raise UserError(
            f"category {category!r} is held under {flag.basis}; destroying it needs --force"
        )
    for name, _cols in locations(dm, category):
        tm = dm.tables[name]
        files = [c for c in tm.files if c in tm.columns[category]]
        files += [ft.template for ft in tm.file_templates if ft.category == category]
        if files:
            raise UserError(
                f"category {category!r} names files on {name} ({files[0]}): clearing the "
                "column would leave the file; destroy it by withdrawal or the sweep"
            )
    return flag
