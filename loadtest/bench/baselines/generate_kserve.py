"""Baseline B of the generation bench: a plain ``kserve.Model`` as KServe's docs write one, ``predict`` calling
``model.generate`` for its one request (kserve runs a sync ``predict`` on its event loop: one at a time).

    python -m loadtest.bench.baselines.generate_kserve --model_dir DIR --http_port 8004 --grpc_port 8005

``POST /v1/models/gen:predict {"prompt": "...", "max_new_tokens": 64}`` -> ``{"text", "completion_tokens"}``;
greedy, exactly ``max_new_tokens`` new tokens (``min_new_tokens``, like the other targets' ``ignore_eos``).
"""

from __future__ import annotations

import argparse


def serve(model_dir: str, http_port: int, grpc_port: int) -> None:
    import kserve
    import torch
    from kserve.errors import InvalidInput
    from transformers import AutoModelForCausalLM, AutoTokenizer

    class PlainGenerator(kserve.Model):
        def load(self) -> bool:
            self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
            self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                              local_files_only=True).eval()
            self.ready = True
            return True

        def predict(self, payload, headers=None):
            prompt, n = payload.get("prompt"), payload.get("max_new_tokens", 64)
            if not isinstance(prompt, str) or not isinstance(n, int):
                raise InvalidInput('expected {"prompt": "...", "max_new_tokens": N}')
            ids = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                                     add_generation_prompt=True, return_tensors="pt",
                                                     return_dict=True)
            with torch.inference_mode():
                out = self.model.generate(**ids, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                          pad_token_id=self.tokenizer.eos_token_id)
            new = out[0, ids["input_ids"].shape[1]:]
            return {"text": self.tokenizer.decode(new, skip_special_tokens=True),
                    "completion_tokens": int(new.numel())}

    model = PlainGenerator("gen")
    model.load()
    # kserve binds 0.0.0.0 and always opens a gRPC port: pass a free one so parallel runs never clash
    kserve.ModelServer(http_port=http_port, grpc_port=grpc_port, workers=1, enable_docs_url=False).start([model])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model_dir", required=True)
    p.add_argument("--http_port", type=int, required=True)
    p.add_argument("--grpc_port", type=int, required=True)
    a = p.parse_args()
    serve(a.model_dir, a.http_port, a.grpc_port)


if __name__ == "__main__":
    main()
