from nudge.cli import app

app()
