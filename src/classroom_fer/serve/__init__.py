"""The teacher dashboard (`classroom-fer serve`): FastAPI app in app.py, page in static/."""
