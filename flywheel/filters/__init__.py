"""The filter chain: decode once, then resolution, duplicates, people, face size, quality, fake-person."""
