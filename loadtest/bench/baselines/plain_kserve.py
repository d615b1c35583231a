"""Baseline B, plain KServe: a ``kserve.Model`` as the KServe docs write one, no batching.

    python -m loadtest.bench.baselines.plain_kserve --model_name snap --model_dir models/all-MiniLM-L6-v2 \
        --http_port 8002 --grpc_port 9002 [--device cuda]

``predict`` is a plain ``def`` (the docs' custom-model pattern): KServe calls it on its event loop,
so each request's forward pass runs alone, one after another. v1 ``{"instances": [...]}`` in,
``{"predictions": [[...]]}`` out, like snapserve.
"""

from __future__ import annotations

import argparse
import logging

import kserve
from kserve import model_server
from kserve.errors import InvalidInput

from loadtest.bench.model import Encoder


class PlainEmbedder(kserve.Model):
    def __init__(self, name: str, model_dir: str, device: str):
        super().__init__(name)
        self.model_dir, self.device = model_dir, device
        self.encoder: Encoder | None = None

    def load(self) -> bool:
        self.encoder = Encoder(self.model_dir, self.device)
        logging.getLogger("plain_kserve").info("warm-up %.2fs on %s", self.encoder.warm_up(), self.encoder.device)
        self.ready = True
        return self.ready

    def predict(self, payload: dict, headers: dict[str, str] | None = None) -> dict:
        instances = payload.get("instances") if isinstance(payload, dict) else None
        if not instances or not all(isinstance(t, str) for t in instances):
            raise InvalidInput('expected {"instances": ["text", ...]}')
        return {"predictions": self.encoder.encode(instances)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(parents=[model_server.parser], conflict_handler="resolve")
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--device", default="cpu")
    args, _ = parser.parse_known_args(argv)
    model = PlainEmbedder(args.model_name, args.model_dir, args.device)
    model.load()
    kserve.ModelServer(http_port=args.http_port, grpc_port=args.grpc_port, workers=1,
                       enable_docs_url=False).start([model])


if __name__ == "__main__":
    main()
