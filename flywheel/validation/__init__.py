"""Great Expectations suites that gate the data (used directly, GX 1.x API)."""
