"""Property-based fuzzing (hypothesis): bounded, derandomized, without an example database."""
