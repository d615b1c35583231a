"""Baseline A of the generation bench: the seed pattern, a small FastAPI app around ``model.generate``, one
request at a time (a lock: no batching across requests, as the first version of such a service is written).

    python -m loadtest.bench.baselines.generate_hf --model_dir DIR --port 8003

``POST /generate {"prompt": "...", "max_new_tokens": 64}`` renders the chat template, decodes greedily for
exactly ``max_new_tokens`` (``min_new_tokens`` too: the same work as the other targets' ``ignore_eos``) and
answers ``{"text", "completion_tokens"}``.
"""


import argparse
import threading


def app(model_dir: str):
    import torch
    from fastapi import FastAPI
    from pydantic import BaseModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, local_files_only=True).eval()
    lock = threading.Lock()
    api = FastAPI()

    class Req(BaseModel):
        prompt: str
        max_new_tokens: int = 64

    @api.post("/generate")
    def generate(req: Req) -> dict:  # a sync route: FastAPI's thread pool, serialised by the lock
        ids = tokenizer.apply_chat_template([{"role": "user", "content": req.prompt}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
        with lock, torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=req.max_new_tokens, min_new_tokens=req.max_new_tokens,
                                 do_sample=False, pad_token_id=tokenizer.eos_token_id)
        new = out[0, ids["input_ids"].shape[1]:]
        return {"text": tokenizer.decode(new, skip_special_tokens=True), "completion_tokens": int(new.numel())}

    return api


def main() -> None:
    import uvicorn

    p = argparse.ArgumentParser()
    p.add_argument("--model_dir", required=True)
    p.add_argument("--port", type=int, required=True)
    a = p.parse_args()
    uvicorn.run(app(a.model_dir), host="127.0.0.1", port=a.port, log_level="warning")


if __name__ == "__main__":
    main()
