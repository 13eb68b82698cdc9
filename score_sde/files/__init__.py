"""Files a run reads and writes: atomic writes, checkpoints, the workdir layout, the writer lock, run records and PNG output."""
