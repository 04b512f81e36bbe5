"""The data subject's rights as request kinds: 회원탈퇴 (``withdrawal``), 정정 (``correction``),
삭제 (``erasure``), 동의 철회 (``consent_withdrawal``), 처리정지 (``suspension``, and its lifting)
and 열람 (``access``). Each kind is a list of steps carried out by the one request runner in
``pipeline.py`` (read that first); the steps work through the engine, the vault, third parties
and notices.

May import: every capability package below it (core, datamap, vault, requests, engine, shred,
channels, notices, recipients)."""
