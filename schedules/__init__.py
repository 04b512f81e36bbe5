"""Beat schedules: nightly jobs at 03:00 Asia/Seoul and the outbox relay every few seconds."""
