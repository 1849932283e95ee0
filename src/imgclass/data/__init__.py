"""Images in: sources, one-file decoding, the validated tree, a person's decisions and the split."""
