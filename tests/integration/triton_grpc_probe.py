"""Run as its own process: tritonclient's gRPC stubs and kserve's register the same protobuf names
(``inference.*``) in protobuf's default pool, so both cannot be imported into one interpreter.

    python -m tests.integration.triton_grpc_probe HOST:PORT MODEL TEXT...   -> JSON on stdout
"""

from __future__ import annotations

import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient


def main(target: str, model: str, texts: list[str]) -> dict:
    client = grpcclient.InferenceServerClient(target)
    try:
        meta = client.get_model_metadata(model, as_json=True)
        output = meta["outputs"][0]["name"]
        text = grpcclient.InferInput("text", [len(texts)], "BYTES")
        text.set_data_from_numpy(np.array(texts, dtype=np.object_))
        result = client.infer(model, [text], outputs=[grpcclient.InferRequestedOutput(output)], request_id="g-1")
    finally:
        client.close()
    return {"metadata": meta, "output": result.as_numpy(output).tolist(), "id": result.get_response().id}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], sys.argv[3:])))
