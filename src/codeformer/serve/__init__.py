"""`codeformer serve`: a local HTTP API and web page for the restorer (see `app.create_app`)."""
