"""Beat: nightly jobs at 03:00 Asia/Seoul (``beat``, task names from ``lifecycle.core.dispatch``),
the housekeeping ticker (relay, watchdog, ...) and the RedBeat scheduler that keeps beat running
through a Redis restart."""
