"""What inference needs and nothing more: architectures, networks, preprocessing, checkpoints."""
