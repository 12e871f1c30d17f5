"""service: gradserve's FastAPI application over the engine (``service -> engine``)."""
