"""Images in: sources and their layouts, decoding, synthetic parts, duplicates, splitting, shards."""
