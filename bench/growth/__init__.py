"""`python -m bench.growth`: this runtime against the stock mlserver-sklearn runtime (and KServe's
server where it applies) as the work grows, in the same run (issue 28).

One module per axis — rows.py (rows per request), sweep.py (trees and features), models.py (models
per server), cold.py (process start to ready), overload.py (offered load past capacity) — each
measuring its points and returning records; targets.py turns them into ours ÷ stock with PASS/FAIL,
report.py into Markdown and one chart per axis; fleet.py is what the axes share (model
repositories, servers started and always stopped, one wrk point with the server's CPU).
"""
