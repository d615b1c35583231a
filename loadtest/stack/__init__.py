"""The cluster's serving topology on one machine: nginx -> transformer replicas -> nginx -> predictor
replicas, scraped by Prometheus, every replica supervised and restarted like a Kubernetes pod.

Run it with ``python -m loadtest.stack --model_dir models/all-MiniLM-L6-v2`` (embeddings) or
``--model_dir models/SmolLM2-135M-Instruct`` (chat: the servers read the task from the snapshot);
``--collocated`` pairs each transformer with its own predictor on localhost, ``--scale_from_zero``
starts the predictors only once a request is held.
"""
