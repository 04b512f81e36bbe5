"""Flower configuration loaded with `--conf` by `lifecycle up` and docker-compose.

Settings that carry secrets (basic auth) come from the environment (FLOWER_BASIC_AUTH), never
from argv, so they do not show in `ps`.
"""

# Keep the task list readable for ops: what, which job, how it went.
tasks_columns = "name,uuid,state,args,kwargs,result,received,started,runtime,worker"
# History survives a Flower restart (the db path is passed on the command line).
persistent = True
state_save_interval = 60_000
# Workers that vanished stay visible for a day, then drop off the dashboard.
purge_offline_workers = 24 * 3600
