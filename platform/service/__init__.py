"""The platform service: FastAPI app, auth and the job dispatcher."""
