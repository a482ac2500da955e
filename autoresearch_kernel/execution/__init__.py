"""Execution: running one experiment's notebook, and where.

    runner.py        the only caller of papermill: one notebook, one kernel, a wall-clock limit, a cancel
    spec.py          what a run needs to know of the loop's settings (`ExperimentSpec`), and nothing more
    launch.py        one experiment: its folder, its parameters, its jail, the runner
    lanes.py         where experiments run at once (devices, CPU shares) and the local executor
    ray_executor.py  each run a Ray task on some node of a cluster (the loop side; ray_node.py the node side)
    run_once.py      `autoresearch run-once`: a notebook outside the loop, as an experiment would run
"""
