"""Training: the denoising score-matching and VLB losses, the optimizer, the time-dependent classifier, the training loop and its graceful stops."""
