"""Where and how a run executes: device, threads and mixed precision, torchrun process groups,
progress reports."""
