"""Small file-system helpers shared by every phase."""
