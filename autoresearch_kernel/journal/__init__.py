"""The journal: what the loop has done, on disk and in memory.

    results.py   results.tsv: one row per executed notebook, appended atomically
    rows.py      the one place a row is built (a finished run, one that never ran, an invalid proposal)
    records.py   the run's rows in memory: the best, its runs, the noise, pairs, the proposers' history
    runstate.py  state.json (the experiments in flight), status.json, the loop's lock, stop and abort requests
    memory.py    the idea memory: every idea tried, by change and by code, for the proposer and the novelty check
    digest.py    the idea memory in a few lines, for a prompt
    change.py    what one commit changed: the constants it moved and hashes of its code
"""
