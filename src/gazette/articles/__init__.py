"""Articles: storing them once, from feeds, files and the CLI, and their HTML for mail."""
