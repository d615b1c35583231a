"""The cluster's serving topology on one machine: nginx -> transformer replicas -> nginx -> predictor
replicas, scraped by Prometheus, every replica supervised and restarted like a Kubernetes pod.

Run it with ``python -m loadtest.stack --model_dir models/all-MiniLM-L6-v2``.
"""
