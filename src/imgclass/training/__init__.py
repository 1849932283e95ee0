"""The training loop and what it needs: resume, distributed, augmentation, losses, lr-find."""
