"""`tunelab serve`: an HTTP API over tuned models (FastAPI + uvicorn), a thin shell over `tunelab.api` — the library
never imports it. `app.create_app` builds the application; `batcher.MicroBatcher` gathers concurrent predict
requests into one forward pass; `generation` streams chat replies."""
