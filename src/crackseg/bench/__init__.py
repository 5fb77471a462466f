"""`crackseg bench`: inference and training throughput, measured in one run, printed and written as JSON.

Variants are timed in interleaved rounds (each round runs every variant once), so slow drifts of the machine hit
all of them alike and their ratios are fair. Weights are random: speed does not depend on them, and the gate's
decisions are driven so the share of decoded crops is exact.
"""
