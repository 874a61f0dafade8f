"""Past one process: Ray for batch jobs."""
