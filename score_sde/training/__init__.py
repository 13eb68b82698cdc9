"""Training: the denoising score-matching and VLB losses, the optimizer, the time-dependent
classifier, what a run trains (tasks and settings), the training state and its graceful stops."""
