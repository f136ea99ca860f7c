"""Reports: tables (Markdown, LaTeX booktabs, CSV, JSON), plots, HTML, carbon statement.
Unit conversion for display happens here and nowhere else. No torch."""
