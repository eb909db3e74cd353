"""Server-rendered web pages; templates live in templates/dashboard/."""
