"""Baseline A, the usual pattern: one FastAPI/uvicorn process, one model, one request -> one forward pass.

    python -m loadtest.bench.baselines.fastapi_a --model_dir models/all-MiniLM-L6-v2 --port 8001 [--device cuda]

Same route and body as KServe v1 (``POST /v1/models/<name>:predict {"instances": [...]}``) so the
benchmark sends identical requests. The endpoint is a plain ``def``, as in most tutorials: FastAPI
runs it in its thread pool, so concurrent requests run concurrent, unbatched forward passes.
"""

from __future__ import annotations

import argparse
import logging

from pydantic import BaseModel


class Request(BaseModel):
    instances: list[str]


def build_app(model_dir: str, model_name: str, device: str):
    from fastapi import FastAPI, HTTPException

    from loadtest.bench.model import Encoder

    encoder = Encoder(model_dir, device)
    logging.getLogger("baseline_a").info("warm-up %.2fs on %s", encoder.warm_up(), encoder.device)
    app = FastAPI()

    @app.get(f"/v1/models/{model_name}")
    def ready() -> dict:
        return {"name": model_name, "ready": True}

    @app.post(f"/v1/models/{model_name}:predict")
    def predict(req: Request) -> dict:
        if not req.instances:
            raise HTTPException(422, "instances is empty")
        return {"predictions": encoder.encode(req.instances)}

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model_dir", required=True)
    p.add_argument("--model_name", default="snap")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    app = build_app(args.model_dir, args.model_name, args.device)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
