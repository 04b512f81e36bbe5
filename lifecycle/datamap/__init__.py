"""The data map: what the website's tables hold, for how long, and how rows reach a member.

Owns the YAML model (``model``), its loader and checks (``loader``), retention periods and
legal bases (``periods``), the flag on unique identifiers (``identifiers``), the member
table as corrections and notices see it (``member_table``), the shipped maps (``maps/``),
the personal-data patterns (``patterns``, pure) and the sampling scan that finds what the map
does not cover (``discover``). Pure apart from schema reflection and that scan's reads.

May import: ``lifecycle.core``, ``lifecycle.channels`` (address validation)."""
