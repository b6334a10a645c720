"""qapi package."""
