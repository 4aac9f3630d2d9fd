"""`python -m context_svc`: run the service until SIGTERM."""

from context_svc.config import ContextSettings
from context_svc.service import build
from servicekit.server import main

if __name__ == "__main__":
    main(ContextSettings(), build, "context_svc")
