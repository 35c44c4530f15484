"""The run agent: makes a run's working directory, runs the script, streams logs, syncs outputs."""
