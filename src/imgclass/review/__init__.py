"""Out-of-sample checks before the split: embeddings, quality, scoring, the report and the page."""
