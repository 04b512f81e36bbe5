"""The data map: what the website's tables hold, for how long, and how rows reach a member.

Owns the YAML model (``model``), its loader and checks (``loader``), retention periods and
legal bases (``periods``), the flag on unique identifiers (``identifiers``), the member
table as corrections and notices see it (``member_table``) and the shipped maps (``maps/``).
Pure apart from schema reflection.

May import: ``lifecycle.core``, ``lifecycle.channels`` (address validation)."""
