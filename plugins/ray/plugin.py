"""The Ray plugin's hooks (being written)."""
