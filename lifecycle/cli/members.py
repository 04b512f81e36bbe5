"""What the operator typed as MEMBER_ID, turned into the lifecycle's member id, one way for every
command (`withdraw`, `correct`, `access`, `erase`, `suspend`, `consent withdraw`, `archive
retrieve`, ...).

MEMBER_ID is the numeric member key, or any identity the data map declares on the member table: the
site's own login id (Gnuboard's ``mb_id``, ``lee_mh7``), the email address, the mobile number
(compared in canonical form, lifecycle/datamap/identities.py). With a login column other than the
email, digits alone are a login id. The rights a former member keeps (`access`, `consent withdraw`,
`archive retrieve`, and `ledger --member`) also find a withdrawn member whose records are kept, by
the keyed hashes of their identities (lifecycle/vault/former.py). Two members matching is refused,
as is bad input, in one line before anything is written.
"""

from __future__ import annotations

HELP = (
    "The member: the numeric id, or an identity the map declares (login id such as lee_mh7, "
    "email, mobile)."
)


def parse_member_id(raw: str) -> int:
    # The one rule lives with the intake; imported here so `lifecycle --help` skips SQLAlchemy.
    from lifecycle.rights.intake import parse_member_id as parse

    return parse(raw)


def member_id_from(raw: str, *, former: bool = False) -> int:
    """The member id for MEMBER_ID as typed (see the module docstring). ``former``: a right a
    former member keeps (열람, consent withdrawal, archive retrieval) also finds a withdrawn
    member by an identity they declared, through the hashes kept with their records."""
    from lifecycle.datamap.current import current_datamap
    from lifecycle.rights.intake import typed_identities

    subject = current_datamap().subject
    text = raw.strip()
    # Bad input is refused before any server is asked: digits alone are the member id (unless
    # the site's own login ids may be digits), and text that is no declared identity is wrong.
    if not subject.login_column and (text.isdigit() or not typed_identities(subject, text)):
        return parse_member_id(raw)
    from lifecycle.core.db import check_reachable, engine
    from lifecycle.rights.intake import resolve_member, subject_table

    check_reachable("primary")
    lookup = None
    if former:
        # Only these rights open the archive DB; the others stay as quick as before.
        from lifecycle.vault.former import find

        lookup = find
    # One query on the member table (no reflection, no engine): the command stays quick.
    with engine("primary").connect() as conn:
        return resolve_member(subject, subject_table(subject), conn, raw, former=lookup)
