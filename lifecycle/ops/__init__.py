"""What operators run and read: the `lifecycle status` report (``status``) and the demo site's seed
data (``demo_seed``).

May import: every capability package (it only reads them)."""
