"""Log volume at the defaults: one access line per client request at the transformer, none for
probes, none per request at the predictor, no kserve trace lines, no progress bar, no deprecation."""

from __future__ import annotations

import httpx

from tests import procs

REQUESTS, PROBES = 20, 20


def lines(server: procs.Server) -> list[str]:
    return server.log.read_text(errors="replace").splitlines()


def test_log_lines_per_request_and_probe(model_dir, tmp_path):
    predictor, _ = procs.start_predictor(model_dir=model_dir, log_dir=tmp_path)
    try:
        transformer, _ = procs.start_transformer(predictor.url.removeprefix("http://"), model_dir=model_dir,
                                                 log_dir=tmp_path)
        try:
            before = {"p": len(lines(predictor)), "t": len(lines(transformer))}
            for i in range(REQUESTS):
                r = httpx.post(f"{transformer.url}/v1/models/snap:predict", json={"instances": [f"text {i}"]})
                assert r.status_code == 200
            for url in (transformer.url, predictor.url):
                for _ in range(PROBES):
                    assert httpx.get(f"{url}/v2/health/ready").status_code == 200
                httpx.get(f"{url}/metrics")
            t_new, p_new = lines(transformer)[before["t"]:], lines(predictor)[before["p"]:]
            start_lines = lines(transformer)[:before["t"]] + lines(predictor)[:before["p"]]
        finally:
            transformer.stop()
    finally:
        predictor.stop()
    print(f"\nlog lines: transformer {len(t_new)} for {REQUESTS} requests + {PROBES} probes; predictor {len(p_new)}; "
          f"at start {len(start_lines)}")
    access = [line for line in t_new if "snapserve.access" in line]
    assert len(access) == REQUESTS and all("/v1/models/snap:predict" in line for line in access)
    assert len(t_new) == REQUESTS, t_new[:5]  # nothing else per request or probe
    assert p_new == [], p_new[:5]
    everything = "\n".join(start_lines + t_new + p_new)
    assert "kserve.trace" not in everything
    assert "DeprecationWarning" not in everything and "it/s]" not in everything, everything[-2000:]
