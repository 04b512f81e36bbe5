"""The data subject's rights as request kinds: 회원탈퇴 (``withdrawal``) and 정정 (``correction``).
Each kind declares its steps on the request state machine and does its work through the engine,
the vault, third parties and notices.

May import: every capability package below it (core, datamap, vault, requests, engine, shred,
channels, notices, thirdparty)."""
