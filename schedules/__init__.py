"""Beat: nightly jobs at 03:00 Asia/Seoul, and the housekeeping ticker (relay, watchdog, ...)."""
