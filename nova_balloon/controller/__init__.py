"""The control cycle: a pure planner and the thin loop that runs it on a driver."""
