"""Files a run reads and writes: atomic writes, checkpoints, the workdir layout and its output
folders, the writer lock, PNG output."""
