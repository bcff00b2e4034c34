"""The narrated demo corpus: shapes doing actions, each narrated while it happens."""
