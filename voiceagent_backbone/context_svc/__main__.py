"""`python -m voiceagent_backbone.context_svc`: run the service until SIGTERM (--help: its
settings)."""

import os

# numpy's OpenBLAS spreads a cosine over more than about 1,200 rows across every core and
# then busy-waits for more work, so steady Enrich traffic keeps a core spinning that the
# embedding model needs (measured: a 512 KiB document's background embedding took 41-44 s
# instead of 23 s while a client called Enrich every 50 ms; the cosine itself takes 0.2 ms
# for 2,400 rows on one thread). The service's own thread pools provide the parallelism.
# OpenBLAS reads this when numpy loads it, so before any import; an operator's value wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from voiceagent_backbone.context_svc.config import ContextSettings
from voiceagent_backbone.context_svc.service import build
from voiceagent_backbone.servicekit.cli import run

SUMMARY = (
    "context_svc: the context an agent needs before it answers a turn (the user's memory "
    "across conversations, a knowledge base, user facts), kept current from state_svc's feed."
)

if __name__ == "__main__":
    run(ContextSettings, build, "context_svc", SUMMARY)
